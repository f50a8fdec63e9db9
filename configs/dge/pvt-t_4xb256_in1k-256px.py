# Static baseline of DGE Fig. 5(a): PVT-tiny at 256x256 (recipe of pvt-s_4xb256_in1k-256px.py;
# stochastic depth 0.1 as PVT's ImageNet recipe for this size).
_base_ = './pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(arch='tiny', drop_path_rate=0.1))
