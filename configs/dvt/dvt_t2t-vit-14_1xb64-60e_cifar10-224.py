# DVT on T2T-ViT-14 fine-tuned on CIFAR-10 at 224 from the ImageNet DVT-T2T-ViT-14: the
# T2T-ViT-12 CIFAR-10 config (the public T2T-ViT transfer recipe) with the T2T-ViT-14 host.
_base_ = './dvt_t2t-vit-12_1xb64-60e_cifar10-224.py'

model = dict(
    arch='t2t-vit-14',
    thresholds_file='work_dirs/dvt_t2t-vit-14_1xb64-60e_cifar10-224/thresholds.json',
    init_cfg=dict(checkpoint='work_dirs/dvt_t2t-vit-14_8xb64_in1k/epoch_310.pth'))
