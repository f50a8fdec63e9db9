# MSViT-Ti/16,32 on ImageNet-1k at 224: ViT-Ti/16 (ImageNet-21k weights), g* = 0.5, lambda = 4,
# the ViT recipe of ./msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py.
_base_ = './msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
checkpoint = 'https://huggingface.co/timm/vit_tiny_patch16_224.augreg_in21k/resolve/main/pytorch_model.bin'  # noqa
model = dict(
    backbone=dict(arch='vit-t', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    head=dict(in_channels=192))
