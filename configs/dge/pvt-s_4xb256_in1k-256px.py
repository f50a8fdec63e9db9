# Static baseline of DGE Table 1: PVT-Small (v1) on ImageNet-1k at 256x256 (the DGE paper
# re-trains every host at 256 so that maps divide by more granularities).
# Recipe (DGE Sec. 4.1.1 following DeiT/PVT; mmpretrain's DeiT-S config): AdamW lr 1e-3 for
# batch 1024 (4 GPUs x 256), weight decay 0.05, cosine, 300 epochs, 20 warm-up epochs, random
# resized crops, flipping, RandAugment, Mixup 0.8 / CutMix 1.0, label smoothing 0.1,
# random erasing. Classifier: global average pooling of stage 4 (mmdyn's PVT has no cls token).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVT',
        arch='small',
        pretrain_img_size=256,
        drop_path_rate=0.1,
        out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False))

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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.pos_embed': dict(decay_mult=0.0)}))
