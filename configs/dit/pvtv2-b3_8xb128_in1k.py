# PVTv2-B3 on ImageNet-1k with DiT's recipe (baseline of dit-b3_8xb128_in1k.py; published
# PVTv2-B3: 6.9 GFLOPs, 83.2 top-1); recipe as pvtv2-b2_8xb128_in1k.py.
_base_ = './pvtv2-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b3', drop_path_rate=0.3))
