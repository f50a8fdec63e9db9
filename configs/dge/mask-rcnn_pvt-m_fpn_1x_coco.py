# Static baseline of DGE Table 2: Mask R-CNN 1x with PVT-Medium (paper: 63.9 M, 339 G, 42.0 AP).
_base_ = './mask-rcnn_pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
