# DGE Table 3: Semantic FPN with PVT-Small + dynamic grained encoders on ADE20K (paper: 28.2 M
# params, 155 G FLOPs at 512x2048, 41.7 mIoU; the static PVT-S: 226 G, 41.8 mIoU).
# Phi = {1, 2, 4}, S = 4, budget gamma = 0.5, lambda = 1; recipe of the static baseline.
# The backbone should start from a PVT-S + DGE ImageNet classifier
# (dge-pvt-s_4xb256_in1k-256px.py; init_cfg=dict(type='Pretrained', checkpoint=CLS_CKPT,
# prefix='backbone.')); no such checkpoint was released, so the static PVT-S ImageNet weights
# are loaded and the gates start at their own init (finest granularity with probability 0.95).
_base_ = ['./fpn_pvt-s_4xb8-80k_ade20k-512x512.py', './_base_/dge.py']

model = dict(backbone={{_base_.dge_backbone}})
val_evaluator = {{_base_.dge_evaluators.ade20k}}
test_evaluator = val_evaluator
