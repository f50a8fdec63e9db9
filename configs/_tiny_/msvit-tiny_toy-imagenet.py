# CPU smoke config (not for results): MSViT's ImageNet gate-training config
# (../msvit/msvit-t-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k.py) with a tiny 2-layer MSViT
# (16/32-pixel tokens, a small gate) on 64x64 crops of the generated ImageNet-layout data set and
# 4 iterations; validates at the end and keeps the last checkpoint (iter_4.pth). The gate
# warm-up of the real schedule (gate gradients off for the first 15018 iterations) is shortened
# to 2 iterations so that the gate trains in the smoke run too.
_base_ = '../msvit/msvit-t-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k.py'

model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2, num_heads=2, mlp_ratio=2),
                  img_size=64, gate_cfg=dict(hidden_dims=8), init_cfg=None),
    head=dict(in_channels=32))
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook',
         schedules=[dict(path='backbone.gate_grad_mult', type='constant', value=1.0, begin=0,
                         warmup=2, warmup_value=0.0)]),
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
