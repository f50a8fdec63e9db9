# Static T2T-ViT-10 fine-tuned on CIFAR-10 at 224 (a baseline row of the paper's Table 3): the
# T2T-ViT-12 config with the T2T-ViT-10 host and its public ImageNet weights.
_base_ = './t2t-vit-12_1xb64-60e_cifar10-224.py'

model = dict(
    backbone=dict(
        arch='t2t-vit-10',
        init_cfg=dict(checkpoint='work_dirs/pretrained/t2t-vit-10_in1k_official.pth.tar')),
    head=dict(in_channels=256))
