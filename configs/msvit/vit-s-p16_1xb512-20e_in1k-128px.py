# Static ViT-S/16 baseline at 128x128 (paper Table 1: ViT-S/16 in=128): the 224 config at
# another input size. Test: short side resized to 146 (the 256/224 ratio), centre crop 128.
_base_ = './vit-s-p16_1xb512-20e_in1k-224px.py'

model = dict(backbone=dict(img_size=128))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=128, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=146, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=128),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
