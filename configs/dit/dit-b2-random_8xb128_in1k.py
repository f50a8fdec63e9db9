# Ablation of DiT-B2 on ImageNet-1k, routing='random' (paper Table 7 'Random': 3.8 GFLOPs, 79.4);
# recipe as dit-b2_8xb128_in1k.py.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        routing='random',
        # no gate is learned, so no budget loss is computed; instead the keep probabilities are
        # set so that the expected realised cost is the dynamic model's budget (mu x C_base =
        # 3.82 GFLOPs at 224): a token is computed with probability 0.26 and a column path taken
        # with probability 0.5 give 3.81 GFLOPs (exact expectation over the 2^15 column
        # patterns, tests/test_configs/test_dit_configs.py). The paper gives no ratios.
        random_keep=(0.26, 0.5),
    ))
