# SETR-Naive DoViT-B on ADE20K with xi = 0.98 (the paper's Table 2 threshold sweep); everything
# else as ./setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py (xi = (0.96, 0.955, 0.95)).
_base_ = './setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(threshold=0.98))
