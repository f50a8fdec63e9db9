# PVTv2-B1 on ImageNet-1k with DiT's recipe (baseline of dit-b1_8xb128_in1k.py; published
# PVTv2-B1: 2.1 GFLOPs, 78.7 top-1); recipe as pvtv2-b2_8xb128_in1k.py.
_base_ = './pvtv2-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b1', drop_path_rate=0.1))
