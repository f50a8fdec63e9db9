# DVT (DeiT-S, 3 exits, both reuses) fine-tuned on CIFAR-10 at 224x224 from the ImageNet DVT
# model (the paper's CIFAR setting: images up-sampled to 224, so the exits see 7x7, 10x10 and
# 14x14 tokens as on ImageNet). The paper gives no fine-tuning schedule; ours (see README):
# AdamW lr 1e-4 for 8 x 16 images, weight decay 0.05, 50 epochs, cosine after 2 linear warm-up
# epochs, random crop (padding 4 at 32 px, i.e. 28 at 224) and flip, no Mixup/CutMix.
_base_ = [
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    type='mmdyn.DVTClassifier',
    arch='deit-s',
    # the ImageNet model's tokenizers (the public code's, see dvt_deit-s_8xb128_in1k.py)
    exits=[
        dict(grid=7, patch_size=32, input_size=224),
        dict(grid=10, patch_size=23, patch_pad=3, input_size=224),
        dict(grid=14, patch_size=16),
    ],
    patch_size=16,
    num_classes=10,
    feature_reuse=True,
    relation_reuse=True,
    thresholds=[1.0, 1.0],
    thresholds_file='work_dirs/dvt_deit-s_8xb16-50e_cifar10-224/thresholds.json',
    backbone_cfg=dict(drop_path_rate=0.1, qkv_bias=True),
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    data_preprocessor=dict(
        num_classes=10,
        mean={{_base_.data_preprocessor.mean}},
        std={{_base_.data_preprocessor.std}},
        to_rgb=False),
    # the ImageNet DVT weights; the 1000-class heads do not match and are left out (mmengine
    # skips mismatched shapes with a warning)
    init_cfg=dict(type='Pretrained',
                  checkpoint='work_dirs/dvt_deit-s_8xb128_in1k/epoch_310.pth'))

train_pipeline = [
    dict(type='Resize', scale=224, interpolation='bicubic'),
    dict(type='RandomCrop', crop_size=224, padding=28),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=224, interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=2),
]
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)

custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
find_unused_parameters = True
