# Static baseline of DGE Table 3: Semantic FPN with PVT-Medium on ADE20K (paper: 316 G, 44.0).
_base_ = './fpn_pvt-s_4xb8-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
