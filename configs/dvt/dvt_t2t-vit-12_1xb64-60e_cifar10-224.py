# DVT on T2T-ViT-12 (3 exits, both reuses) fine-tuned on CIFAR-10 at 224x224 from the ImageNet
# DVT-T2T-ViT-12 (the paper's Table 3: "resize the CIFAR images to 224x224 and fine-tune the
# T2T-ViT and DVT models of Figure 6 with the official code and training configurations of
# T2T-ViT"). That transfer recipe (the public T2T-ViT code's transfer_learning.py with its README
# command): SGD momentum 0.9, lr 0.05 for the classifier heads and 0.01 x 0.05 for the
# pretrained parts, weight decay 5e-4, batch 64, 60 epochs, cosine to 2e-4, drop-path 0.1,
# plain cross-entropy; resize to 224 (bilinear), random crop with padding 28, flip, CIFAR-10
# mean/std.
_base_ = './dvt_deit-s_8xb16-50e_cifar10-224.py'

model = dict(
    host='t2t',
    # the T2T exits' grids come from their first soft split (not the DeiT tokenizers of the base)
    exits=[7, 10, 14],
    arch='t2t-vit-12',
    img_size=224,
    thresholds_file='work_dirs/dvt_t2t-vit-12_1xb64-60e_cifar10-224/thresholds.json',
    backbone_cfg=dict(_delete_=True, drop_path_rate=0.1, token_dims=64,
                      token_type='performer'),
    loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0),
    # the ImageNet DVT-T2T-ViT-12 (ours, or the public code's release: converted on load); the
    # 1000-class heads are skipped (shape mismatch)
    init_cfg=dict(type='Pretrained',
                  checkpoint='work_dirs/dvt_t2t-vit-12_8xb128_in1k/epoch_310.pth'))

train_pipeline = [
    dict(type='Resize', scale=224, interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=224, padding=28),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=224, interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
    # every pretrained part at 0.01 x lr, the classifier heads at lr (the public transfer
    # code's "transfer ratio")
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.01),
        'feature_modules': dict(lr_mult=0.01),
        'relation_module': dict(lr_mult=0.01),
    }))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=60, eta_min=2e-4, by_epoch=True,
                        begin=0, end=60)]
train_cfg = dict(by_epoch=True, max_epochs=60, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
