# DoViT-B (xi = 0.985) in Segmenter on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1). The static Segmenter ViT-B of ./segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py
# with DoViT as in the authors' config: decisions read blocks 2, 5, 8, FCN auxiliary heads (CE
# weight 0.4 each), token merging once more than 10 % of the tokens have stopped, distillation
# (pixel KL weight 1.0 + last-feature MSE weight 0.5); in training the threshold falls
# linearly from 1.0 to xi over the first 70k iterations (mmdyn.DynamicScheduleHook on
# backbone.train_threshold, resumable); evaluation always uses xi.
_base_ = ['./segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py', './_base_/dovit.py']

xi = 0.985
teacher_cfg = '{{fileDirname}}/segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768/iter_80000.pth'
model = dict(
    _base_.dovit_segmentor,
    backbone=dict(
        _base_.dovit_backbone, num_classes=19, threshold=xi, train_threshold=1.0,
        aux_head=_base_.dovit_aux_fcn))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.train_threshold', type='linear', start_value=1.0, end_value=xi,
             begin=0, end=70000),
    ]),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt, teacher_features=_base_.dovit_teacher_features),
]
train_dataloader = dict(batch_size=1)  # the authors' DoViT students: 1 image per GPU
val_evaluator = {{_base_.dovit_evaluators}}
test_evaluator = val_evaluator
