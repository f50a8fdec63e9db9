# Static baseline (and DoDeiT teacher): SETR-Naive DeiT-S/16 on Cityscapes, 768x768, 80k
# iterations; as ./setr_vit-s_naive_8xb2-80k_cityscapes-768x768.py with DeiT-S weights.
_base_ = './setr_vit-s_naive_8xb2-80k_cityscapes-768x768.py'
model = dict(backbone={{_base_.setr_deit_s_host}})
train_dataloader = dict(batch_size=1)  # 8 GPUs x 1 image (no public counterpart to follow)
