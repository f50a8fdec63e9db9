# DoViT-B (xi = 0.985) in SETR-PUP on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images.
# The static SETR-PUP ViT-B of ./setr_vit-b_pup_8xb2-160k_ade20k-512x512.py with the ViT host
# replaced by DoViT: decisions after blocks 3, 6, 9 (one 1x1-conv auxiliary head each, trained with
# alpha = 1.0, Eq. 10), token merging on, pixel-KL self-distillation (beta = 0.4, Eq. 11) from the
# trained static segmentor (frozen teacher, run by mmdyn.SelfDistillationHook). The DoViT
# auxiliary heads take the place of SETR's three auxiliary heads.
_base_ = './setr_vit-b_pup_8xb2-160k_ade20k-512x512.py'

xi = 0.985
teacher_cfg = '{{fileDirname}}/setr_vit-b_pup_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-b_pup_8xb2-160k_ade20k-512x512/iter_160000.pth'
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
