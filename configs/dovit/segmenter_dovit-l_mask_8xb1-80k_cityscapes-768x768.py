# DoViT-L (xi = 0.985) in Segmenter on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1): ./segmenter_dovit-b_mask_8xb1-80k_cityscapes-768x768.py on the large host (24
# blocks) with decisions after blocks 6, 12, 18, distilled from
# ./segmenter_vit-l_mask_8xb2-80k_cityscapes-768x768.py.
_base_ = './segmenter_dovit-b_mask_8xb1-80k_cityscapes-768x768.py'
xi = 0.985
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth'  # noqa
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        out_indices=(23, ),
        decision_layers=(6, 12, 18),
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=1024, channels=1024, embed_dims=1024, num_heads=16))
teacher_cfg = '{{fileDirname}}/segmenter_vit-l_mask_8xb2-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/segmenter_vit-l_mask_8xb2-80k_cityscapes-768x768/iter_80000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
