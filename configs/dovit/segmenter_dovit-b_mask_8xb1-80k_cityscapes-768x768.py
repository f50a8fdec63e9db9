# DoViT-B (xi = 0.985) in Segmenter on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1). The static ./segmenter_vit-b_mask_8xb1-80k_cityscapes-768x768.py with DoViT:
# decisions after blocks 3, 6, 9, 1x1-conv auxiliary heads (alpha = 1.0), token merging, pixel-KL
# self-distillation (beta = 0.4); in training the threshold falls linearly from 1.0 to xi over the
# first 70k iterations (public recipe), resumable through mmdyn.DynamicScheduleHook.
_base_ = ['./segmenter_vit-b_mask_8xb1-80k_cityscapes-768x768.py', './_base_/dovit.py']

xi = 0.985
teacher_cfg = '{{fileDirname}}/segmenter_vit-b_mask_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/segmenter_vit-b_mask_8xb1-80k_cityscapes-768x768/iter_80000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(_base_.dovit_backbone, num_classes=19, threshold=xi, train_threshold=1.0))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.train_threshold', type='linear', start_value=1.0, end_value=xi,
             begin=0, end=70000),
    ]),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
