# RetinaNet with a PVTv2-B2 backbone on COCO, 1x schedule (12 epochs), batch 16 (8 GPUs x 2).
# mmdet's own PVTv2-B2 RetinaNet config (the PVTv2 recipe: AdamW lr 1e-4, weight decay 1e-4;
# FPN from the stride-8 stage, extra levels on the input) with mmdyn's PVTv2 as the backbone.
_base_ = 'mmdet::pvt/retinanet_pvtv2-b2_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
from mmdyn.utils.config_parts import pvtv2_backbone as __pvtv2_backbone  # noqa: E402

model = dict(
    backbone=__pvtv2_backbone('b2'),
    neck=dict(in_channels=[64, 128, 320, 512]))
