# Static baseline (and DoViT teacher): SETR-Naive ViT-L/16 on Cityscapes, 768x768, 80k
# iterations, 8 GPUs x 1 image: mmseg's SETR-Naive ViT-L recipe (outputs after blocks 10, 15,
# 20, 24) with mmdyn's ViT host.
_base_ = './setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'
setr_aux_head = dict(_base_.setr_aux_head, in_channels=1024)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        out_indices=(9, 14, 19, 23),
        init_cfg=dict(type='Pretrained', checkpoint=_base_.mmseg_vit_large)),
    decode_head=dict(in_channels=1024),
    auxiliary_head=[dict(setr_aux_head, in_index=i) for i in range(3)])
