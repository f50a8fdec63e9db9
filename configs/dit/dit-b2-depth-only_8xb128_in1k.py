# Ablation of DiT-B2 on ImageNet-1k, routing='depth_only' (paper Table 8 depth only: 3.7 GFLOPs, 82.2);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='depth_only',
    ))
