# DGE Table 3: Semantic FPN with PVT-Medium + DGE on ADE20K (paper: 202 G, 43.9 mIoU).
_base_ = './fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
