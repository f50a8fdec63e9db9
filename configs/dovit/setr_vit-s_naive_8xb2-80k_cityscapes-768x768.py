# Static baseline (and DoViT teacher): SETR-Naive ViT-S/16 on Cityscapes, 768x768, 80k iterations,
# 8 GPUs x 2 images (the authors' ViT-S teacher sets 2 per GPU, its "8x1" name aside; their B / L
# teachers 1); as ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py with the small host.
_base_ = './setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py'
setr_aux_head = dict(_base_.setr_aux_head, in_channels=384)
model = dict(
    backbone={{_base_.setr_vit_s_host}},
    decode_head=dict(in_channels=384),
    auxiliary_head=[dict(setr_aux_head, in_index=i) for i in range(3)])
train_dataloader = dict(batch_size=2)
