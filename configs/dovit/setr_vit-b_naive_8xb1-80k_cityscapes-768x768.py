# Static baseline (and DoViT teacher): SETR-Naive with a ViT-B/16 backbone on Cityscapes,
# 768x768 crops, 80k iterations, 8 GPUs x 1 image. mmseg's SETR-Naive Cityscapes recipe (SGD
# lr 1e-2, no weight decay, heads at 10x lr, slide test 768/512) with mmdyn's ViT-B host.
_base_ = [
    'mmseg::_base_/models/setr_naive.py', 'mmseg::_base_/datasets/cityscapes_768x768.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py',
    './_base_/vit-hosts.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

crop_size = (768, 768)
num_classes = 19
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
setr_aux_head = dict(
    type='SETRUPHead', in_channels=768, channels=256, num_classes=num_classes,
    dropout_ratio=0, norm_cfg=norm_cfg, num_convs=1, up_scale=4, kernel_size=1,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(_base_.setr_vit_b_host, img_size=crop_size, final_norm=True),
    decode_head=dict(in_channels=768, in_index=3, num_classes=num_classes),
    auxiliary_head=[dict(setr_aux_head, in_index=i) for i in range(3)],
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
