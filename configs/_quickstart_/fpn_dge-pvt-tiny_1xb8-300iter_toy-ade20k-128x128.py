# Quickstart: Semantic-FPN with a tiny dynamic backbone (PVT with dynamic grained encoders, DGE:
# each 4x4 region of every block picks query granularity 1, 2 or 4; budget 0.5) on a generated
# ADE20K-layout data set (`python tools/dataset_converters/make_toy_dataset.py --layout ade20k
# --out data/toy_ade20k`), trained in a few minutes on a CPU with `python tools/train.py` (the
# same model as `bash tools/quickstart.sh`, which trains it in a script of its own).
# Validation reports mIoU and the realised GFLOPs per image.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

data_root = 'data/toy_ade20k'
crop_size = (128, 128)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True, type='mmdyn.DGEPVT',
        arch=dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 4],
                  mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1]),
        granularities=(1, 2, 4), budget=0.5, budget_weight=1.0, drop_path_rate=0.0),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32, num_outs=4),
    decode_head=dict(in_channels=[32, 32, 32, 32], channels=32, num_classes=150,
                     norm_cfg=norm_cfg, dropout_ratio=0.0))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
find_unused_parameters = True  # gates skip work per image (DDP)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=20, end=300)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
