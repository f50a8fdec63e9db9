# Static baseline of DGE (official README: DeiT-S 80.6 top-1, 6.1 G MACs at 256x256): DeiT-S at
# 256x256 with mmpretrain's DeiT-S recipe (configs/baselines/deit-small_4xb256_in1k.py) and the
# DGE host (dge=False: exactly mmdyn.ViT's parameters and outputs), with the stochastic depth of
# the authors' ImageNet runs (vtpack's DeiT trainer: drop path 0.1, which mmpretrain's DeiT-S
# recipe removes).
# The 256x256 pipelines defined here are shared by every ImageNet config of configs/dge (the
# PVT / DPVT ones inherit from this file and replace the model).
_base_ = '../baselines/deit-small_4xb256_in1k.py'

model = dict(
    backbone=dict(type='mmdyn.DGEViT', dge=False, arch='deit-s', img_size=256,
                  drop_path_rate=0.1))
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=[58.395, 57.12, 57.375]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=292, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=256),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# vtpack's ImageNet trainer (main.py, configs/standard/*.sh): no gradient clipping (mmpretrain's
# DeiT-S recipe clips at 5.0), repeated augmentation (each image 3 times per epoch, on by
# default there) and 5 warm-up epochs (its default; the DGE and DPVT scripts pass 20)
optim_wrapper = dict(clip_grad=None)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline),
                        sampler=dict(type='RepeatAugSampler', num_repeats=3, shuffle=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)]
