# ViT-S/16 on ImageNet-1k with mmdyn's static ViT host, trained with mmpretrain's DeiT-S recipe.
# ViT-S/16 and DeiT-S have the same architecture (384 dims, 12 blocks, 6 heads, MLP ratio 4):
# this config is the DeiT-S one with the arch name (and so the checkpoints it is compared with)
# changed.
_base_ = './deit-small_4xb256_in1k.py'

model = dict(backbone=dict(arch='vit-s'))
