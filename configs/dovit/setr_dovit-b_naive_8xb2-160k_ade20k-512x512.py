# DoViT-B in SETR-Naive on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images. The static
# SETR-Naive ViT-B of ./setr_vit-b_naive_8xb2-160k_ade20k-512x512.py with DoViT as in the authors'
# ADE20K SETR-B config: thresholds (0.96, 0.955, 0.95) at the decisions after blocks 2, 5, 8,
# SETR-UP auxiliary heads (CE weight 0.4 each), token merging once more than 10 % of the tokens
# have stopped, distillation from the trained static segmentor (pixel KL weight 1.0 +
# last-feature MSE weight 0.5). The paper's single thresholds: the _xi<value> configs.
_base_ = ['./setr_vit-b_naive_8xb2-160k_ade20k-512x512.py', './_base_/dovit.py']

# one threshold per decision, the authors' ADE20K SETR-B/S setting
xi = (0.96, 0.955, 0.95)
teacher_cfg = '{{fileDirname}}/setr_vit-b_naive_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-b_naive_8xb2-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(
        _base_.dovit_backbone, num_classes=150, threshold=xi, aux_head=_base_.dovit_aux_setr),
    auxiliary_head=None)

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt, teacher_features=_base_.dovit_teacher_features),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
