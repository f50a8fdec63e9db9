# DoViT-S (xi = 0.96) in Segmenter (mask transformer) on ADE20K, 512x512, 160k iterations,
# 8 GPUs x 1 image. The static Segmenter ViT-S of ./segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py
# with DoViT: decisions after blocks 3, 6, 9 (1x1-conv auxiliary heads, alpha = 1.0), token
# merging, pixel-KL self-distillation from the trained static segmentor (beta = 0.4). In training
# the threshold falls linearly from 1.0 (nothing stops) to xi over the first 140k iterations
# (mmdyn.DynamicScheduleHook on backbone.train_threshold, resumable); evaluation always uses xi.
_base_ = ['./segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py', './_base_/dovit.py']

xi = 0.96
teacher_cfg = '{{fileDirname}}/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(_base_.dovit_backbone, num_classes=150, threshold=xi, train_threshold=1.0))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.train_threshold', type='linear', start_value=1.0, end_value=xi,
             begin=0, end=140000),
    ]),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
