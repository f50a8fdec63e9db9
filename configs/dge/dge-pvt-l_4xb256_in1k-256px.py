# DGE Fig. 5(a): PVT-large + DGE at 256x256, gamma = 0.5, Phi = {1, 2, 4}.
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(arch='large', drop_path_rate=0.3))
