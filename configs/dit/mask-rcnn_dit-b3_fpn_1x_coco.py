# mask-rcnn with DiT-B3 on COCO, 1x (paper Table 4: 48.0 AP / 41.7 mask AP); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b3',
        budget=6.8 / 6.9,
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b3.pth')))
