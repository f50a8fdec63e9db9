# MSDeiT-S/16,32 on ImageNet-1k at 224: DeiT-S (ImageNet-1k weights) fine-tuned 20 epochs with the
# gate, g* = 0.5, lambda = 4. DeiT fine-tuning differences (paper appendix C.2): ImageNet
# mean/std normalisation and bicubic resizing, AdamW lr 2e-5, no gradient clipping, small
# weight decay (0.05, DeiT's), label smoothing 0.1. Gate settings as ./msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py.
_base_ = './msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
checkpoint = 'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth'
data_preprocessor = dict(
    num_classes=1000, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='deit-s', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    head=dict(
        loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8))
