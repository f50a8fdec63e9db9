# DGE Table 1: Phi = {0, 1} (S = 1: a learnable binary token mask, paper 78.8 top-1, 3.5 G).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(granularities=(0, 1)))
