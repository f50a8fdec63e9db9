# Static baseline (and DoViT teacher): Segmenter (mask transformer, 2 layers) ViT-L/16 on
# Cityscapes, 768x768, 80k iterations, 8 GPUs x 2 images; as
# ./segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py with the large host (24 blocks, mmseg's
# ViT-L/16-384 checkpoint) and a 1024-wide mask transformer with 16 heads, as mmseg's Segmenter
# ViT-L.
_base_ = './segmenter_vit-b_mask_8xb2-80k_cityscapes-768x768.py'
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth'  # noqa
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        out_indices=(23, ),
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=1024, channels=1024, embed_dims=1024, num_heads=16))
