# DiT-B1 on ImageNet-1k (paper Table 1: 2.0 GFLOPs, 79.9 top-1); recipe as DiT-B2, stochastic depth
# as PVTv2-B1.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b1', budget=2.0 / 2.1, drop_path_rate=0.1))
