# DoViT-S in SETR-Naive on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images (Table 2):
# ./setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py (thresholds (0.96, 0.955, 0.95)) on the small
# host with diff_conf = 0.02 (the authors' ADE20K SETR-S config), distilled from
# ./setr_vit-s_naive_8xb2-160k_ade20k-512x512.py.
_base_ = './setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py'
model = dict(
    # near-uniform tokens stop too (the authors' ADE20K SETR-S config; not in their SETR-B one)
    backbone=dict(_base_.setr_vit_s_host, diff_conf=0.02),
    decode_head=dict(in_channels=384))
teacher_cfg = '{{fileDirname}}/setr_vit-s_naive_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-s_naive_8xb2-160k_ade20k-512x512/iter_160000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
