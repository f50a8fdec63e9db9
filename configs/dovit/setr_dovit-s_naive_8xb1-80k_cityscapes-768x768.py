# DoViT-S (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1): ./setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py on the small host, distilled
# from ./setr_vit-s_naive_8xb2-80k_cityscapes-768x768.py.
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(
    backbone={{_base_.setr_vit_s_host}},
    decode_head=dict(in_channels=384))
teacher_cfg = '{{fileDirname}}/setr_vit-s_naive_8xb2-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_vit-s_naive_8xb2-80k_cityscapes-768x768/iter_80000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
