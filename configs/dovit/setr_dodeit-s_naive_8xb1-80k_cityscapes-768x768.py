# DoDeiT-S (xi = 0.985) in SETR-Naive on Cityscapes, 768x768, 80k iterations, 8 GPUs x 1 image
# (Table 1): ./setr_dovit-s_naive_8xb1-80k_cityscapes-768x768.py with DeiT-S weights, distilled
# from ./setr_deit-s_naive_8xb1-80k_cityscapes-768x768.py.
_base_ = './setr_dovit-s_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(
    backbone=dict(
        arch='deit-s',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth')))
teacher_cfg = '{{fileDirname}}/setr_deit-s_naive_8xb1-80k_cityscapes-768x768.py'
teacher_ckpt = 'work_dirs/setr_deit-s_naive_8xb1-80k_cityscapes-768x768/iter_80000.pth'
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', teacher_cfg=teacher_cfg,
         teacher_checkpoint=teacher_ckpt),
]
