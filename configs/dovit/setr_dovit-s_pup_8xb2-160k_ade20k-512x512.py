# DoViT-S (xi = 0.985) in SETR-PUP on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images
# (Table 2): ./setr_dovit-b_pup_8xb2-160k_ade20k-512x512.py (decisions after blocks 3, 6, 9,
# 1x1-conv auxiliary heads with alpha = 1.0, token merging, pixel-KL self-distillation with
# beta = 0.4) on the small host, distilled from ./setr_vit-s_pup_8xb2-160k_ade20k-512x512.py.
_base_ = './setr_dovit-b_pup_8xb2-160k_ade20k-512x512.py'
model = dict(
    backbone={{_base_.setr_vit_s_host}},
    decode_head=dict(in_channels=384))
teacher_cfg = '{{fileDirname}}/setr_vit-s_pup_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_vit-s_pup_8xb2-160k_ade20k-512x512/iter_160000.pth'
# the parent's hooks, with the distillation hook pointed at this config's teacher
custom_hooks = [
    dict(hook, teacher_cfg=teacher_cfg, teacher_checkpoint=teacher_ckpt)
    if hook.type == 'mmdyn.SelfDistillationHook' else hook for hook in _base_.custom_hooks
]
