# CPU smoke config (not for results): DiT's Semantic FPN config
# (../dit/fpn_dit-b2_4xb4-40k_ade20k-512x512.py) with a tiny four-stage DiT, 64x64 crops of the
# generated ADE20K-layout data set and 4 iterations; validates at the end and keeps the last
# checkpoint (iter_4.pth).
_base_ = '../dit/fpn_dit-b2_4xb4-40k_ade20k-512x512.py'

data_root = 'data/toy_ade20k'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=4, by_epoch=False)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1,
                    save_last=True),
    visualization=dict(type='SegVisualizationHook', draw=False))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook'),
                dict(type='mmdyn.GateMomentumHook')]
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
