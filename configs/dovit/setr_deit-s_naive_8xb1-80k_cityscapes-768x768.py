# Static baseline (and DoDeiT teacher): SETR-Naive DeiT-S/16 on Cityscapes, 768x768, 80k
# iterations; as ./setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py with DeiT-S weights.
_base_ = './setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(backbone={{_base_.setr_deit_s_host}})
