# DoViT-S (xi = 0.96) in Segmenter (mask transformer) on ADE20K, 512x512, 160k iterations,
# 8 GPUs x 1 image. The static Segmenter ViT-S of ./segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py
# with DoViT: decisions after blocks 3, 6, 9 (1x1-conv auxiliary heads, alpha = 1.0), token
# merging, pixel-KL self-distillation from the trained static segmentor (beta = 0.4). In training
# the threshold falls linearly from 1.0 (nothing stops) to xi over the first 140k iterations
# (mmdyn.DynamicScheduleHook on backbone.train_threshold, resumable); evaluation always uses xi.
_base_ = './segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'

xi = 0.96
teacher_cfg = '{{fileDirname}}/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    type='mmdyn.DoViTEncoderDecoder',
    aux_loss_weight=1.0,
    distill_loss=dict(temperature=1.0, loss_weight=0.4),
    backbone=dict(
        type='mmdyn.DoViT',
        num_classes=150,
        decision_layers=(3, 6, 9),
        threshold=xi,
        train_threshold=1.0,
        merge_tokens=True))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.train_threshold', type='linear', start_value=1.0, end_value=xi,
             begin=0, end=140000),
    ]),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
find_unused_parameters = True
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
