# DiT-B4 in Semantic FPN on ADE20K (paper Table 5: 78.4 GFLOPs, 49.0 mIoU; PVTv2-B4: 81.3, 47.9); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b4',
        budget=9.9 / 10.1,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b4.pth')))
