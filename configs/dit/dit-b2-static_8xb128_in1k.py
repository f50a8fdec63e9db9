# Ablation of DiT-B2 on ImageNet-1k, routing='static' (paper Table 6 'Static': 3.8 GFLOPs, 80.7);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='static',
    ))
