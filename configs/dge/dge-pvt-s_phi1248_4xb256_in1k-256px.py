# DGE Table 1: Phi = {1, 2, 4, 8} (S = 8; paper 79.9 top-1, 3.4 G, +16.1 K parameters).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(granularities=(1, 2, 4, 8)))
