# Static baseline (and DoDeiT teacher): SETR-Naive DeiT-B/16 on Cityscapes, 768x768, 80k
# iterations; as ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py with DeiT-B weights.
_base_ = './setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'

model = dict(backbone={{_base_.setr_deit_b_host}})
