# Static baseline (and DoViT teacher): SETR-Naive ViT-S/16 on ADE20K, 512x512, 160k iterations,
# 8 GPUs x 2 images; as ./setr_vit-b_naive_8xb2-160k_ade20k-512x512.py with the small host.
_base_ = './setr_vit-b_naive_8xb2-160k_ade20k-512x512.py'
setr_aux_head = dict(_base_.setr_aux_head, in_channels=384)
model = dict(
    backbone={{_base_.setr_vit_s_host}},
    decode_head=dict(in_channels=384),
    auxiliary_head=[dict(setr_aux_head, in_index=i) for i in range(3)])
