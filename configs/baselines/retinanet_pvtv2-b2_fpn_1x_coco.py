# RetinaNet with a PVTv2-B2 backbone on COCO, 1x schedule (12 epochs), batch 16 (8 GPUs x 2).
# mmdet's own PVTv2-B2 RetinaNet config (the PVTv2 recipe: AdamW lr 1e-4, weight decay 1e-4;
# FPN from the stride-8 stage, extra levels on the input) with mmdyn's PVTv2 as the backbone.
_base_ = 'mmdet::pvt/retinanet_pvtv2-b2_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch='b2',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
