# CPU smoke config (not for results): MSViT's ImageNet gate-training config
# (../msvit/msvit-t-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k.py) with a tiny 2-layer MSViT
# (16/32-pixel tokens, a small gate) on 64x64 crops of the generated ImageNet-layout data set and
# 4 iterations; validates at the end and keeps the last checkpoint (iter_4.pth). The gate
# warm-up of the real schedule (gate gradients off for the first 15018 iterations) is shortened
# to 2 iterations so that the gate trains in the smoke run too.
_base_ = '../msvit/msvit-t-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k.py'
from mmdyn.utils.config_parts import toy_classification_run as __toy_run  # noqa: E402

data_root = 'data/toy_imagenet'
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2, num_heads=2, mlp_ratio=2),
                  img_size=64, gate_cfg=dict(hidden_dims=8), init_cfg=None),
    head=dict(in_channels=32))
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.DynamicScheduleHook',
         schedules=[dict(path='backbone.gate_grad_mult', type='constant', value=1.0, begin=0,
                         warmup=2, warmup_value=0.0)]),
]

# the toy ImageNet run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root))
