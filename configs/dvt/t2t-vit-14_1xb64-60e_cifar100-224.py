# Static T2T-ViT-14 fine-tuned on CIFAR-100 at 224 (a baseline row of the paper's Table 3): the
# CIFAR-10 config with mmpretrain's CIFAR-100 data set and 100 classes (CIFAR-10 mean/std, as the
# public T2T-ViT transfer code).
_base_ = './t2t-vit-14_1xb64-60e_cifar10-224.py'

model = dict(data_preprocessor=dict(num_classes=100), head=dict(num_classes=100))
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100/'))
test_dataloader = val_dataloader
