# DoDeiT-B (xi = 0.96) in SETR-PUP on ADE20K, 512x512, 160k iterations, 8 GPUs x 2 images
# (Table 2): ./setr_dovit-b_pup_8xb2-160k_ade20k-512x512.py with DeiT-B weights and xi = 0.96,
# distilled from ./setr_deit-b_pup_8xb2-160k_ade20k-512x512.py.
_base_ = './setr_dovit-b_pup_8xb2-160k_ade20k-512x512.py'
xi = 0.96
model = dict(
    backbone=dict(
        arch='deit-b',
        threshold=xi,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth')))
teacher_cfg = '{{fileDirname}}/setr_deit-b_pup_8xb2-160k_ade20k-512x512.py'
teacher_ckpt = 'work_dirs/setr_deit-b_pup_8xb2-160k_ade20k-512x512/iter_160000.pth'
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
