# MSSeg-T/16 (paper Sec. 4.2.1, Fig. 4a): the MSSeg-S/16 config with the ViT-T/16 encoder (and
# mmseg's Segmenter ViT-T pretrained weights); the frozen gate comes from the ImageNet
# MSViT-T/16,32 model trained with g* = 0.5 (msvit-t-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py).
_base_ = './segmenter_msvit-s-p16-32-g0.5_mask_8xb1-160k_ade20k-512x512.py'

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_tiny_p16_384_20220308-cce8c795.pth'  # noqa
model = dict(
    backbone=dict(
        arch='vit-t',
        gate_checkpoint='work_dirs/msvit-t-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k/epoch_20.pth',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=192, channels=192, embed_dims=192, num_heads=3))
