# DGE Fig. 5(b): the budget sweep, PVT-S + DGE with gamma = 0.75 (Phi = {1, 2, 4}).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(budget=0.75))
