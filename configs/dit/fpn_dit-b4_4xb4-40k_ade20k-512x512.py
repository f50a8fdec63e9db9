# DiT-B4 in Semantic FPN on ADE20K (paper Table 5: 78.4 GFLOPs, 49.0 mIoU; PVTv2-B4: 81.3, 47.9); recipe as DiT-B2.
_base_ = './fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

model = dict(backbone={{_base_.dit_ade_sizes.b4}})
