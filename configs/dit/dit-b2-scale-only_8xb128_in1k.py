# Ablation of DiT-B2 on ImageNet-1k, routing='scale_only' (paper Table 8 scale only: 8.4 GFLOPs, 82.9);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='scale_only',
    ))
