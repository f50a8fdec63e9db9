# DGE Table 3: Semantic FPN with DPVT-small + DGE (Phi = {1, 2, 4}, gamma = 0.5); pooled queries
# sample around the centre of their patch. Initialise from a DPVT(+DGE) ImageNet classifier.
_base_ = './fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmdyn.DGEDPVT', arch='small', init_cfg=None))
