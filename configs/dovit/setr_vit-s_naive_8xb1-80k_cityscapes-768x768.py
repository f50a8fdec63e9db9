# Static baseline (and DoViT teacher): SETR-Naive ViT-S/16 on Cityscapes, 768x768, 80k iterations,
# 8 GPUs x 1 image; as ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py with the small host.
_base_ = './setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'

setr_aux_head = dict(
    type='SETRUPHead', in_channels=384, channels=256, num_classes=19, dropout_ratio=0,
    norm_cfg=dict(type='SyncBN', requires_grad=True), num_convs=2, up_scale=4, kernel_size=1,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    backbone=dict(
        arch='vit-s',
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/vit_small_p16_384.pth')),
    decode_head=dict(in_channels=384),
    auxiliary_head=[
        dict(setr_aux_head, in_index=0),
        dict(setr_aux_head, in_index=1),
        dict(setr_aux_head, in_index=2),
    ])
