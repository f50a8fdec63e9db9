# DoViT-S (xi = 0.96, diff_conf = 0.02) in Segmenter (mask transformer) on ADE20K, 512x512,
# 160k iterations, 8 GPUs x 1 image. The static Segmenter ViT-S of
# ./segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py with DoViT as in the authors' config:
# decisions read blocks 2, 5, 8, FCN auxiliary heads (CE weight 0.4 each), token merging once
# more than 10 % of the tokens have stopped, distillation (pixel KL weight 1.0 + last-feature
# MSE weight 0.5). In training the threshold falls linearly from 1.0 (nothing stops) to xi over
# the first 140k iterations (mmdyn.DynamicScheduleHook on backbone.train_threshold, resumable);
# evaluation always uses xi.
_base_ = ['./segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py', './_base_/dovit.py']

xi = 0.96
teacher_cfg = '{{fileDirname}}/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(
        _base_.dovit_backbone, num_classes=150, threshold=xi, train_threshold=1.0,
        aux_head=_base_.dovit_aux_fcn, diff_conf=0.02))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.train_threshold', type='linear', start_value=1.0, end_value=xi,
             begin=0, end=140000),
    ]),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt, teacher_features=_base_.dovit_teacher_features),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
