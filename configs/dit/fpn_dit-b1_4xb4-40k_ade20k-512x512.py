# DiT-B1 in Semantic FPN on ADE20K (paper Table 5: 32.7 GFLOPs, 45.0 mIoU; PVTv2-B1: 34.2, 42.5); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(backbone={{_base_.dit_ade_sizes.b1}})
