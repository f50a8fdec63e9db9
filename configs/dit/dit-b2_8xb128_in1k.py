# DiT-B2 on ImageNet-1k (paper Table 1: 3.8 GFLOPs, 83.1 top-1, 55.9 M "valid" parameters;
# PVTv2-B2 4.0 GFLOPs, 82.0). Paper recipe (Sec. 4.1): DeiT training (random crop, flip, label
# smoothing, Mixup, CutMix; mmpretrain's Swin/DeiT ImageNet pipeline with RandAugment and random
# erasing), AdamW lr 1e-3, weight decay 0.05, batch 1024 (8 GPUs x 128), cosine, 300 epochs,
# from scratch. Warm-up (5 epochs) and gradient clipping are not in the paper: PVTv2's values.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdyn.DiT',
        arch='b2',
        num_stages=4,
        routing='dynamic',
        budget=3.8 / 4.0,
        budget_weight=0.8,
        gate_momentum=0.999,
        drop_path_rate=0.1,
        out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# 8 GPUs x 128 images = 1024 per iteration
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
find_unused_parameters = True
