# Ablation of DiT-B2 on ImageNet-1k, routing='fully' (paper Table 6 'Fully': 15.6 GFLOPs, 83.5);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='fully',
    ))
