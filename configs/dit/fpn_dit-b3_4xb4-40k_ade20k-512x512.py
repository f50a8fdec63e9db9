# DiT-B3 in Semantic FPN on ADE20K (paper Table 5: 59.0 GFLOPs, 48.7 mIoU; PVTv2-B3: 62.4, 47.3); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b3',
        budget=6.8 / 6.9,
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b3.pth')))
