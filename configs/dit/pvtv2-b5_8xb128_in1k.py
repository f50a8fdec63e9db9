# PVTv2-B5 on ImageNet-1k with DiT's recipe (baseline of dit-b5_8xb128_in1k.py; published
# PVTv2-B5: 11.8 GFLOPs, 83.8 top-1); recipe as pvtv2-b2_8xb128_in1k.py.
_base_ = './pvtv2-b2_8xb128_in1k.py'

model = dict(backbone=dict(arch='b5', drop_path_rate=0.3))
