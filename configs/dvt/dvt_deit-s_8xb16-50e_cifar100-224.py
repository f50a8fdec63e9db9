# DVT (DeiT-S, 3 exits, both reuses) fine-tuned on CIFAR-100 at 224x224 from the ImageNet DVT
# model: the CIFAR-10 config with mmpretrain's CIFAR-100 data set (cifar100_bs16.py) and 100
# classes.
_base_ = './dvt_deit-s_8xb16-50e_cifar10-224.py'

dataset_type = 'CIFAR100'
data_preprocessor = dict(
    num_classes=100, mean=[129.304, 124.070, 112.434], std=[68.170, 65.392, 70.418])
model = dict(
    num_classes=100,
    thresholds_file='work_dirs/dvt_deit-s_8xb16-50e_cifar100-224/thresholds.json',
    data_preprocessor=data_preprocessor)
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100/'))
test_dataloader = val_dataloader
