# PVTv2-B4 on ImageNet-1k with DiT's recipe (baseline of dit-b4_8xb128_in1k.py; published
# PVTv2-B4: 10.1 GFLOPs, 83.6 top-1); recipe as pvtv2-b2_8xb128_in1k.py.
_base_ = './pvtv2-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b4', drop_path_rate=0.3))
