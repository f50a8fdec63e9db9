# CPU smoke config (not for results): MSViT's Segmenter config
# (../msvit/segmenter_msvit-t-p16-32-g0.25_mask_8xb1-160k_ade20k-512x512.py) with a tiny 2-layer
# MSViT (16/32-pixel tokens), 64x64 crops of the generated ADE20K-layout data set and 4
# iterations; validates at the end (sliding window) and keeps the last checkpoint (iter_4.pth).
# No ImageNet-trained gate exists here, so the frozen gate keeps its initialisation
# (gate_checkpoint=None).
_base_ = '../msvit/segmenter_msvit-t-p16-32-g0.25_mask_8xb1-160k_ade20k-512x512.py'
from mmdyn.utils.config_parts import toy_segmentation_run as __toy_run  # noqa: E402

data_root = 'data/toy_ade20k'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depth=2, num_heads=2, mlp_ratio=2),
        img_size=crop_size,
        gate_cfg=dict(hidden_dims=8), gate_checkpoint=None, drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=32, channels=32, embed_dims=32, num_heads=2, num_layers=1),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(48, 48)))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]

# the toy ADE20K run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root, crop_size))
