# DoDeiT-B (xi = 0.96) in SETR-Naive on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images
# (Table 2): ./setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py with DeiT-B weights and xi = 0.96,
# distilled from ./setr_deit-b_naive_8xb2-160k_ade20k-512x512.py.
_base_ = './setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py'
xi = 0.96
model = dict(backbone=dict(_base_.setr_deit_b_host, threshold=xi))
teacher_cfg = '{{fileDirname}}/setr_deit-b_naive_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_deit-b_naive_8xb2-160k_ade20k-512x512/iter_160000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
