# DiT-B3 in Semantic FPN on ADE20K (paper Table 5: 59.0 GFLOPs, 48.7 mIoU; PVTv2-B3: 62.4, 47.3); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(backbone={{_base_.dit_ade_sizes.b3}})
