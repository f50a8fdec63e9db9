# DiT-B1 in Semantic FPN on ADE20K (paper Table 5: 32.7 GFLOPs, 45.0 mIoU; PVTv2-B1: 34.2, 42.5); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b1',
        budget=2.0 / 2.1,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth')))
