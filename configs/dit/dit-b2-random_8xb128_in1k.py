# Ablation of DiT-B2 on ImageNet-1k, routing='random' (paper Table 7 'Random': 3.8 GFLOPs, 79.4);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='random',
        # keep ratios whose expected cost is the dynamic model's (3.8 GFLOPs at 224: 3.83 with
        # a token kept with probability 0.25 and a column path taken with probability 0.5;
        # the paper gives no ratios)
        random_keep=(0.25, 0.5),
    ))
