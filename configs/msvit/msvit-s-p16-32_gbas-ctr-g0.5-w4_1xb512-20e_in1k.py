# MSViT-S/16,32 on ImageNet-1k at 224: a ViT-S/16 (ImageNet-21k weights) fine-tuned for 20 epochs
# together with the mixed-scale gate (coarse 32 px / fine 16 px), generalized batch-shaping with
# centre-initialised priors, target g* = 0.5 (fraction of fine regions), lambda = 4.
# Recipe (paper appendix C.1, the official ViT fine-tuning setup for 20 epochs): batch 512 on
# one device, SGD lr 0.03 momentum 0.9, no weight decay, gradient clipping 1.0, cosine schedule
# with 0.5 warm-up epochs, crop + horizontal flip, inputs scaled to [-1, 1]. Gate (C.3): same
# optimizer, a longer warm-up (6 epochs, here a gradient ramp on the gate, see README),
# relaxed-Bernoulli temperature 0.3, hyperprior std 0.1 (the authors' gBaS Normal takes a std).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_pil_resize.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

# timm's ViT-S/16 AugReg ImageNet-21k weights (layout converted on load)
checkpoint = 'https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k/resolve/main/pytorch_model.bin'  # noqa
data_preprocessor = dict(
    num_classes=1000, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)
model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmdyn.MSViT',
        arch='vit-s',
        img_size=224,
        patch_size=16,  # fine scale S_f
        coarse_size=32,  # coarse scale S_c
        out_type='cls_token',
        gate_cfg=dict(hidden_dims=104, num_layers=4, tau=0.3, threshold=0.5,
                      init_fine_prob=0.99),
        gate_loss=dict(type='gbas', center_init=True, temperature=0.3,
                       hyperprior_std=0.1),
        target=0.5,  # g*
        loss_weight=4.0,  # lambda
        adaptive_trimming=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        init_cfg=dict(type='Constant', layer='Linear', val=0)),  # ViT fine-tuning: zero head
)

train_dataloader = dict(batch_size=512)  # 1 device x 512
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=0.5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0.5, end=20,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

# Gate warm-up: the gradient reaching the gate ramps linearly from 0 to 1 over the first 6
# epochs (6 x 2503 iterations of batch 512 on ImageNet-1k), i.e. with SGD a 6-epoch learning-rate
# warm-up of the gate on top of the model's 0.5-epoch one.
gate_warmup_iters = 6 * 2503
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook', schedules=[
        dict(path='backbone.gate_grad_mult', type='constant', value=1.0, begin=0,
             warmup=gate_warmup_iters, warmup_value=0.0),
    ]),
]
find_unused_parameters = True
