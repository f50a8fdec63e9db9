# DoViT-B (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (the paper's Table 1 / Table 3 setting). The static SETR-Naive ViT-B of
# ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py with DoViT: decisions after blocks 3, 6, 9,
# 1x1-conv auxiliary heads (alpha = 1.0), token merging, pixel-KL self-distillation from the
# trained static segmentor (beta = 0.4).
_base_ = ['./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py', './_base_/dovit.py']

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-b_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(_base_.dovit_backbone, num_classes=19, threshold=xi),
    auxiliary_head=None)

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
