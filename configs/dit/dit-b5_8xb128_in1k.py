# DiT-B5 on ImageNet-1k (paper Table 1: 10.3 GFLOPs, 84.8 top-1); recipe as DiT-B2, stochastic depth
# as PVTv2-B5.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b5', budget=10.3 / 11.8, drop_path_rate=0.3))
