# dovit-s (xi = 0.985) in SETR-PUP on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images
# (Table 2). The static ./setr_vit-s_pup_8xb2-160k_ade20k-512x512.py with DoViT: decisions after
# blocks 3, 6, 9, 1x1-conv auxiliary heads (alpha = 1.0), token merging, pixel-KL
# self-distillation from the trained static segmentor (beta = 0.4).
_base_ = './setr_vit-s_pup_8xb2-160k_ade20k-512x512.py'

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-s_pup_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-s_pup_8xb2-160k_ade20k-512x512/iter_160000.pth'
model = dict(
    type='mmdyn.DoViTEncoderDecoder',
    aux_loss_weight=1.0,
    distill_loss=dict(temperature=1.0, loss_weight=0.4),
    backbone=dict(
        type='mmdyn.DoViT',
        num_classes=150,
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
