# DoViT-S (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1): ./setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py (decisions after blocks 3, 6, 9,
# 1x1-conv auxiliary heads with alpha = 1.0, token merging, pixel-KL self-distillation with
# beta = 0.4) on the small host, distilled from ./setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py.
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(
    backbone=dict(
        arch='vit-s',
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/vit_small_p16_384.pth')),
    decode_head=dict(in_channels=384))
teacher_cfg = '{{fileDirname}}/setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-s_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
