# Static baseline (and DoViT teacher): Segmenter (mask transformer, 2 layers) ViT-S/16 on
# Cityscapes, 768x768, 80k iterations, 8 GPUs x 2 images; as
# ./segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py with the small host (mmseg's ViT-S/16-384
# checkpoint) and a 384-wide mask transformer with 6 heads, as mmseg's Segmenter ViT-S.
_base_ = './segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py'
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth'  # noqa
model = dict(
    backbone=dict(arch='vit-s', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=384, channels=384, embed_dims=384, num_heads=6))
