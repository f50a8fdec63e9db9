# DVT-T2T-ViT-14 fine-tuned on CIFAR-100 at 224: the T2T-ViT-12 CIFAR-100 config with the
# T2T-ViT-14 host, started from the ImageNet DVT-T2T-ViT-14.
_base_ = './dvt_t2t-vit-12_1xb64-60e_cifar100-224.py'

model = dict(
    arch='t2t-vit-14',
    thresholds_file='work_dirs/dvt_t2t-vit-14_1xb64-60e_cifar100-224/thresholds.json',
    init_cfg=dict(checkpoint='work_dirs/dvt_t2t-vit-14_8xb64_in1k/epoch_310.pth'))
