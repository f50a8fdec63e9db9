# CPU smoke config (not for results): DVT on DeiT (../dvt/dvt_deit-s_8xb128_in1k.py): three
# cascaded tiny DeiTs (2, 3 and 4 tokens a side, 8-pixel patches) with feature and relation reuse
# on 64x64 crops of the generated ImageNet-layout data set and 4 iterations; validates at the end
# and keeps the last checkpoint (iter_4.pth). Early exit is on: thresholds 0 (every image stops
# at the first exit) instead of tools/analysis_tools/dvt_thresholds.py's file; set
# `model.thresholds` to see images leave at different exits.
_base_ = '../dvt/dvt_deit-s_8xb128_in1k.py'

model = dict(
    arch=dict(_delete_=True, embed_dims=16, depth=2, num_heads=2, mlp_ratio=1),
    patch_size=8,
    exits=[2, 3, 4],
    thresholds=[0.0, 0.0],
    thresholds_file=None)
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator

data_root = 'data/toy_imagenet'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, by_epoch=False, max_iters=4, val_interval=4)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
