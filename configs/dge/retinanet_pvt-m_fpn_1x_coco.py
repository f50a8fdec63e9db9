# RetinaNet 1x with PVT-Medium (v1) on COCO, the static baseline of the DGE variant; the
# PVT-S recipe (shorter side 768, 8 GPUs x 2 images, AdamW lr 1e-4, steps at 60k / 80k of 90k).
# Not in the DGE paper (PVT's paper: RetinaNet 1x PVT-M 44.1 M params, 41.9 AP at 800).
_base_ = './retinanet_pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
