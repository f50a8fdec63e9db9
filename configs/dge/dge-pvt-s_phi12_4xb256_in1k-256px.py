# DGE Table 1: Phi = {1, 2} (S = 2; paper 80.0 top-1, 3.5 G, +8.1 K parameters).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(granularities=(1, 2)))
