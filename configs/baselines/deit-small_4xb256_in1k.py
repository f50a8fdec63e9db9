# DeiT-S on ImageNet-1k with mmdyn's static ViT host and mmpretrain's DeiT-S recipe
# (AdamW lr 1e-3 for batch 1024 = 4 GPUs x 256, weight decay 0.05, 300 epochs, 20 warm-up
# epochs, cosine, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, RandAugment, random erasing
# 0.25, gradient clipping 5.0, no weight decay on norms, biases, the cls token and the
# position embedding; no stochastic depth for the small arch, as mmpretrain).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.ViT',
        arch='deit-s',
        img_size=224,
        patch_size=16,
        with_cls_token=True,
        final_norm=True,
        out_type='cls_token',
        # mmpretrain's small-arch recipe trains without stochastic depth
        drop_path_rate=0.0),
    head=dict(in_channels=384))
