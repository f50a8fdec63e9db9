# CPU smoke config (not for results): DGE on DeiT (../dge/dge-deit-s_4xb256_in1k-256px.py) with a
# tiny 2-layer DeiT (8-pixel patches) on 64x64 crops of the generated ImageNet-layout data set
# (tools/dataset_converters/make_toy_dataset.py --layout imagenet) and 4 iterations; validates
# at the end and keeps the last checkpoint (iter_4.pth).
_base_ = '../dge/dge-deit-s_4xb256_in1k-256px.py'
from mmdyn.utils.config_parts import toy_classification_run as __toy_run  # noqa: E402

data_root = 'data/toy_imagenet'
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2, num_heads=2, mlp_ratio=2),
                  img_size=64, patch_size=8),
    head=dict(in_channels=32))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]

# the toy ImageNet run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root))
