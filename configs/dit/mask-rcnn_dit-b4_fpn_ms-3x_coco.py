# mask-rcnn with DiT-B4 on COCO, 3x + multi-scale (paper Table 3); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b4',
        budget=9.9 / 10.1,
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b4.pth')))
