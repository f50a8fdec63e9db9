# Static baseline (and DoViT teacher): SETR-Naive ViT-L/16 on Cityscapes, 768x768, 80k
# iterations, 8 GPUs x 1 image: mmseg's SETR-Naive ViT-L recipe (outputs after blocks 10, 15,
# 20, 24) with mmdyn's ViT host.
_base_ = './setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'

setr_aux_head = dict(
    type='SETRUPHead', in_channels=1024, channels=256, num_classes=19, dropout_ratio=0,
    norm_cfg=dict(type='SyncBN', requires_grad=True), num_convs=2, up_scale=4, kernel_size=1,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        out_indices=(9, 14, 19, 23),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/vit_large_p16_384.pth')),
    decode_head=dict(in_channels=1024),
    auxiliary_head=[
        dict(setr_aux_head, in_index=0),
        dict(setr_aux_head, in_index=1),
        dict(setr_aux_head, in_index=2),
    ])
