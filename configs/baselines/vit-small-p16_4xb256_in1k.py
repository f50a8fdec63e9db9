# ViT-S/16 on ImageNet-1k with mmdyn's static ViT host, trained with mmpretrain's DeiT-S recipe
# (AdamW lr 1e-3 for batch 1024, weight decay 0.05, 300 epochs, 20 warm-up epochs, cosine,
# Mixup/CutMix, label smoothing 0.1, RandAugment, random erasing).
# ViT-S/16 and DeiT-S have the same architecture (384 dims, 12 blocks, 6 heads, MLP ratio 4):
# the two configs differ in the arch name (and so in the checkpoints they are compared with).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.ViT',
        arch='vit-s',
        img_size=224,
        patch_size=16,
        with_cls_token=True,
        final_norm=True,
        out_type='cls_token',
        # mmpretrain's small-arch recipe trains without stochastic depth
        drop_path_rate=0.0),
    head=dict(in_channels=384))
