# Static baseline (and DoViT teacher): SETR-Naive with a ViT-B/16 backbone on ADE20K, 512x512,
# 160k iterations, 8 GPUs x 2 images: the decoder the authors' DoViT ADE20K SETR configs use
# (mmseg's SETR-Naive: one 1x1 conv + BN + ReLU, x4 bilinear, 1x1 classifier) with mmseg's
# SETR ADE20K recipe (SGD lr 0.01, no weight decay, heads at 10x lr, poly schedule) and mmdyn's
# ViT-B host, so that the DoViT student loads these weights one to one. Outputs after blocks
# 3, 6, 9, 12 (1-based): the last feeds the decoder, the others SETR's three auxiliary heads.
_base_ = [
    'mmseg::_base_/models/setr_naive.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/vit-hosts.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 150
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
setr_aux_head = dict(
    type='SETRUPHead', in_channels=768, channels=256, num_classes=num_classes,
    dropout_ratio=0, norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'), num_convs=1, up_scale=4,
    kernel_size=1, align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(_base_.setr_vit_b_host, img_size=crop_size),
    decode_head=dict(in_channels=768, in_index=3, num_classes=num_classes),
    auxiliary_head=[dict(setr_aux_head, in_index=i) for i in range(3)],
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
