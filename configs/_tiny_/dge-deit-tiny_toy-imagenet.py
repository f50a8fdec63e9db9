# CPU smoke config (not for results): DGE on DeiT (../dge/dge-deit-s_4xb256_in1k-256px.py) with a
# tiny 2-layer DeiT (8-pixel patches) on 64x64 crops of the generated ImageNet-layout data set
# (tools/dataset_converters/make_toy_dataset.py --layout imagenet) and 4 iterations; validates
# at the end and keeps the last checkpoint (iter_4.pth).
_base_ = '../dge/dge-deit-s_4xb256_in1k-256px.py'

model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2, num_heads=2, mlp_ratio=2),
                  img_size=64, patch_size=8),
    head=dict(in_channels=32))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
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
