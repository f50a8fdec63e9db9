# dovit-s (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1). The static ./setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py with DoViT: decisions
# after blocks (3, 6, 9), 1x1-conv auxiliary heads (alpha = 1.0), token merging, pixel-KL
# self-distillation from the trained static segmentor (beta = 0.4).
_base_ = './setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py'

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-s_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-s_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
model = dict(
    type='mmdyn.DoViTEncoderDecoder',
    aux_loss_weight=1.0,
    distill_loss=dict(temperature=1.0, loss_weight=0.4),
    backbone=dict(
        type='mmdyn.DoViT',
        num_classes=19,
        decision_layers=(3, 6, 9),
        threshold=xi,
        merge_tokens=True),
    auxiliary_head=None)

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
find_unused_parameters = True
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
