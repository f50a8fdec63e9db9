# Ablation of DiT-B2 on ImageNet-1k, routing='scale_only' (paper Table 8 scale only: 8.4 GFLOPs,
# 82.9); recipe as dit-b2_8xb128_in1k.py. Rows always compute, the column gates are learned under
# the method's budget (mu = 0.95, as for every learned-gate ablation: the paper changes only the
# routing). With every row on, the cheapest route to the 1/32 output costs 3.57 GFLOPs (scale 0's
# four stages, then down the last column), so mu x C_base = 3.82 is barely feasible; the paper's
# 8.4 is where its training settled between the task loss and the budget loss (README.md).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='scale_only',
    ))
