# CPU smoke config (not for results): DGE Table 3's Semantic FPN + DGE-PVT config
# (../dge/fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py) with a tiny PVT, 64x64 crops of the generated
# ADE20K-layout data set (tools/dataset_converters/make_toy_dataset.py --layout ade20k) and
# 4 iterations; validates at the end and keeps the last checkpoint (iter_4.pth).
_base_ = '../dge/fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py'
from mmdyn.utils.config_parts import toy_segmentation_run as __toy_run  # noqa: E402

data_root = 'data/toy_ade20k'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 16, 32, 32], out_channels=16),
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]

# the toy ADE20K run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root, crop_size))
