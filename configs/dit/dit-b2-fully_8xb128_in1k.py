# Ablation of DiT-B2 on ImageNet-1k, routing='fully' (paper Table 6 'Fully': 15.6 GFLOPs, 83.5);
# recipe as dit-b2_8xb128_in1k.py. Every gate is 1: no gate runs or learns, so there is no
# budget (the budget loss is not computed; `budget` is inherited and unused). Cost: the whole
# grid, 16.22 GFLOPs at 224 here (breakdown against the paper's 15.6 in README.md).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='fully',
    ))
