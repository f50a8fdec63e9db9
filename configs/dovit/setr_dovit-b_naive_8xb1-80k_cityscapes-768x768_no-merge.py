# Table 3 ablation: SETR-DoViT-B on Cityscapes (xi = 0.985) without token merging (Eq. 8): the
# stopped tokens are not folded into the class token. Everything else as the parent config.
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'

model = dict(backbone=dict(merge_tokens=False))
