# DVT on DeiT-S, 3 exits (7x7, 10x10, 14x14 tokens at 224, the public code's tokenizers),
# feature + relationship reuse.
# Recipe: the DeiT-S baseline of configs/baselines (mmpretrain's DeiT-S: AdamW, lr 1e-3 for a
# total batch of 1024, weight decay 0.05, 300 epochs, cosine to 1e-5 after 20 linear warm-up
# epochs, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, RandAugment m9, random erasing 0.25)
# with the public DVT code's additions: drop-path 0.1, model EMA 0.99996, loss = sum of the
# exits' cross-entropies, its optimizer groups and no gradient clipping (see optim_wrapper).
# 8 GPUs x 128 = 1024 images per step (the public DeiT recipe's batch).
_base_ = '../baselines/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmdyn.DVTClassifier',
    arch='deit-s',
    # the public DVT code's DeiT tokenizers: every exit reads the 224 px image; 7x7 tokens from
    # 32x32 patches, 10x10 from 23x23 patches with padding 3, 14x14 from 16x16 patches (the
    # layout of the released DVT_Deit_small weights). The paper does not say how; resizing the
    # image for one patch-16 tokenizer instead: dvt-resize_deit-s_8xb128_in1k.py
    exits=[
        dict(grid=7, patch_size=32, input_size=224),
        dict(grid=10, patch_size=23, patch_pad=3, input_size=224),
        dict(grid=14, patch_size=16),
    ],
    patch_size=16,
    num_classes=1000,
    feature_reuse=True,
    relation_reuse=True,
    # eta_1, eta_2 until tools/analysis_tools/dvt_thresholds.py has written thresholds_file
    # (1.0: no early exit)
    thresholds=[1.0, 1.0],
    thresholds_file='work_dirs/dvt_deit-s_8xb128_in1k/thresholds.json',
    backbone_cfg=dict(drop_path_rate=0.1, qkv_bias=True),
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    data_preprocessor=dict(
        num_classes=1000,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

# The public DVT code's optimizer (main.py -> timm's create_optimizer on the whole cascade, which
# has no no_weight_decay(): only 1-D parameters and biases skip weight decay, so the class tokens
# and the DeiT position tables ARE decayed) and no gradient clipping (--clip-grad defaults to
# None and the README commands give none). mmpretrain's DeiT recipe (the base) instead exempts
# cls_token / pos_embed and clips at 5.0; that reading stays available by restoring them.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
auto_scale_lr = dict(base_batch_size=1024)

val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
find_unused_parameters = True

# The public code's schedule (timm's, main.py): linear warm-up over 20 epochs from lr 1e-6, a
# cosine to 1e-5 at epoch 300, then 10 cool-down epochs at 1e-5 (its loop runs 310 epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300)]
train_cfg = dict(max_epochs=310)
