# DGE Table 1: layer-wise routing (one region = the whole map; paper 79.1 top-1, 3.4 G).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(layer_wise=True))
