# DoViT-L (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1): ./setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py on the large host (24 blocks,
# outputs after blocks 10, 15, 20, 24) with decisions after blocks 6, 12, 18, distilled from
# ./setr_vit-l_naive_8xb1-80k_cityscapes-768x768.py.
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        out_indices=(9, 14, 19, 23),
        decision_layers=(6, 12, 18),
        init_cfg=dict(type='Pretrained', checkpoint=_base_.mmseg_vit_large)),
    decode_head=dict(in_channels=1024))
teacher_cfg = '{{fileDirname}}/setr_vit-l_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-l_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
