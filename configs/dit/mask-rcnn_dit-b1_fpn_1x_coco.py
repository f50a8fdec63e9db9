# mask-rcnn with DiT-B1 on COCO, 1x (paper Table 4: 42.9 AP / 39.9 mask AP); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b1',
        budget=2.0 / 2.1,
        drop_path_rate=0.1,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth')))
