# DoViT-B (xi = 0.985) in SETR-PUP on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images.
# The static SETR-PUP ViT-B of ./setr_vit-b_pup_8xb2-160k_ade20k-512x512.py with the ViT host
# replaced by DoViT: decisions after blocks 3, 6, 9 (one 1x1-conv auxiliary head each, trained with
# alpha = 1.0, Eq. 10), token merging on, pixel-KL self-distillation (beta = 0.4, Eq. 11) from the
# trained static segmentor (frozen teacher, run by mmdyn.SelfDistillationHook). The DoViT
# auxiliary heads take the place of SETR's three auxiliary heads.
_base_ = ['./setr_vit-b_pup_8xb2-160k_ade20k-512x512.py', './_base_/dovit.py']

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-b_pup_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-b_pup_8xb2-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(_base_.dovit_backbone, num_classes=150, threshold=xi),
    auxiliary_head=None)

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
