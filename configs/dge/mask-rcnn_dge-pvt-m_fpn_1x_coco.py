# DGE Table 2: Mask R-CNN 1x with PVT-Medium + DGE (paper: 228 G, 41.7 box AP / 38.3 mask AP).
_base_ = './mask-rcnn_dge-pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
