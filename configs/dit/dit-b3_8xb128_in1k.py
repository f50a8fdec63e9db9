# DiT-B3 on ImageNet-1k (paper Table 1: 6.8 GFLOPs, 84.2 top-1); recipe as DiT-B2, stochastic depth
# as PVTv2-B3.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b3', budget=6.8 / 6.9, drop_path_rate=0.3))
