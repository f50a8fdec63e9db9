# DoViT-B (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (the paper's Table 1 / Table 3 setting). The static SETR-Naive ViT-B of
# ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py with DoViT as in the authors' config:
# decisions read blocks 2, 5, 8, SETR-UP auxiliary heads (CE weight 0.4 each), token merging
# once more than 10 % of the tokens have stopped, distillation from the trained static segmentor
# (pixel KL weight 1.0 + last-feature MSE weight 0.5).
_base_ = ['./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py', './_base_/dovit.py']

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-b_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(
        _base_.dovit_backbone, num_classes=19, threshold=xi, aux_head=_base_.dovit_aux_setr),
    auxiliary_head=None)

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt, teacher_features=_base_.dovit_teacher_features),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
