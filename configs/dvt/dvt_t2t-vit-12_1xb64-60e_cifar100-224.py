# DVT-T2T-ViT-12 fine-tuned on CIFAR-100 at 224: the CIFAR-10 config with mmpretrain's CIFAR-100
# data set and 100 classes (the public T2T-ViT transfer code normalises CIFAR-100 with the
# CIFAR-10 mean/std too).
_base_ = './dvt_t2t-vit-12_1xb64-60e_cifar10-224.py'

model = dict(
    num_classes=100,
    thresholds_file='work_dirs/dvt_t2t-vit-12_1xb64-60e_cifar100-224/thresholds.json',
    data_preprocessor=dict(num_classes=100))
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100/'))
test_dataloader = val_dataloader
