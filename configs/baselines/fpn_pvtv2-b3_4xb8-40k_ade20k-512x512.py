# Semantic FPN with a PVTv2-B3 backbone on ADE20K; recipe as for PVTv2-B1.
_base_ = './fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b3',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b3.pth')))
