# DiT-B4 on ImageNet-1k (paper Table 1: 9.9 GFLOPs, 84.5 top-1); recipe as DiT-B2, stochastic depth
# as PVTv2-B4.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b4', budget=9.9 / 10.1, drop_path_rate=0.3))
