# Mask R-CNN with a PVTv2-B2 backbone on COCO, 1x schedule (12 epochs), batch 16 (8 GPUs x 2).
# mmdet 3.3.0 ships no PVT Mask R-CNN config: this one takes mmdet's Mask R-CNN R-50-FPN 1x
# and the PVTv2 recipe for it (whai362/PVT, detection/configs/mask_rcnn_pvt_v2_b2_fpn_1x_coco.py:
# AdamW lr 2e-4, weight decay 1e-4, no gradient clipping; FPN 256 channels, 5 levels).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
from mmdyn.utils.config_parts import pvtv2_adamw as __pvtv2_adamw  # noqa: E402
from mmdyn.utils.config_parts import pvtv2_backbone as __pvtv2_backbone  # noqa: E402

model = dict(
    backbone=__pvtv2_backbone('b2'),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=5))

optim_wrapper = __pvtv2_adamw()
