# Static baseline of DGE Fig. 5(a): PVT-large at 256x256 (recipe of pvt-s_4xb256_in1k-256px.py;
# stochastic depth 0.3 as PVT's ImageNet recipe for this size).
_base_ = './pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(arch='large', drop_path_rate=0.3))
