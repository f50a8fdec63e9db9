# CPU smoke config (not for results): DoViT's SETR-PUP config
# (../dovit/setr_dovit-s_pup_8xb2-160k_ade20k-512x512.py) with a tiny 4-layer DoViT (decisions
# after layers 1 and 2), 64x64 crops of the generated ADE20K-layout data set and 4 iterations;
# validates at the end (sliding window) and keeps the last checkpoint (iter_4.pth). No trained
# static teacher exists here, so the self-distillation teacher is the student with every token
# kept (SelfDistillationHook(self_teacher=True)) instead of a separate SETR checkpoint. One
# threshold for the two decisions and no diff_conf: the untrained auxiliary heads predict
# near-uniform classes, which diff_conf = 0.02 would stop everywhere.
_base_ = '../dovit/setr_dovit-s_pup_8xb2-160k_ade20k-512x512.py'
from mmdyn.utils.config_parts import toy_segmentation_run as __toy_run  # noqa: E402

data_root = 'data/toy_ade20k'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depth=4, num_heads=2, mlp_ratio=2),
        img_size=crop_size,
        out_indices=(0, 1, 2, 3), decision_layers=(1, 2), threshold=0.96, diff_conf=None,
        init_cfg=None),
    decode_head=dict(in_channels=32, channels=16),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(48, 48)))
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='mmdyn.SelfDistillationHook', self_teacher=True),
]

# the toy ADE20K run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root, crop_size))
