# CPU smoke config (not for results): DoViT's SETR-Naive config
# (../dovit/setr_dovit-s_naive_8xb2-160k_ade20k-512x512.py) with a tiny 4-layer DoViT (decisions
# after layers 1 and 2), 64x64 crops of the generated ADE20K-layout data set and 4 iterations;
# validates at the end (sliding window) and keeps the last checkpoint (iter_4.pth). No trained
# static teacher exists here, so the self-distillation teacher is the student with every token
# kept (SelfDistillationHook(self_teacher=True)) instead of a separate SETR checkpoint. One
# threshold for the two decisions and no diff_conf: the untrained auxiliary heads predict
# near-uniform classes, which diff_conf = 0.02 would stop everywhere.
_base_ = '../dovit/setr_dovit-s_naive_8xb2-160k_ade20k-512x512.py'

data_root = 'data/toy_ade20k'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depth=4, num_heads=2, mlp_ratio=2),
        img_size=crop_size,
        out_indices=(0, 1, 2, 3), decision_layers=(1, 2), threshold=0.96, diff_conf=None,
        init_cfg=None),
    decode_head=dict(in_channels=32, channels=16),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(48, 48)))

custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', self_teacher=True),
]

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
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
