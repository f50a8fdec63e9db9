# Ablation of DiT-B2 on ImageNet-1k, routing='attention' (paper Table 7 'Attention': 3.8 GFLOPs,
# 81.3): each reached stage computes the quarter of its tokens that receive the most attention
# in its first block; the column gates stay learned under the budget. The kept fraction is our
# choice (the paper gives none): 0.25 with half the column paths taken costs about 3.8 GFLOPs.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(routing='attention', random_keep=(0.25, 0.5)))
