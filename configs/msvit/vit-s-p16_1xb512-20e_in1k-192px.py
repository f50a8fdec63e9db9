# Static ViT-S/16 baseline at 192x192 (paper Table 1: ViT-S/16 in=192): the 224 config at
# another input size. Test: short side resized to 219 (the 256/224 ratio), centre crop 192.
_base_ = './vit-s-p16_1xb512-20e_in1k-224px.py'

model = dict(backbone=dict(img_size=192))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=192, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=219, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=192),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
