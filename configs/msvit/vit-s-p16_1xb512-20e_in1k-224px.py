# Static ViT-S/16 baseline at 224x224 (paper Table 1: ViT-S/16 in=224): the same ImageNet-21k
# weights and 20-epoch ViT fine-tuning recipe as ./msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py, without the gate.
# Test: short side resized to 256 (the 256/224 ratio), centre crop 224.
_base_ = './msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.ViT',
        arch='vit-s',
        img_size=224,
        patch_size=16,
        out_type='cls_token',
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}})))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
custom_hooks = []
