# CPU smoke config (not for results): DVT on DeiT (../dvt/dvt_deit-s_8xb128_in1k.py): three
# cascaded tiny DeiTs (2, 3 and 4 tokens a side, 8-pixel patches) with feature and relation reuse
# on 64x64 crops of the generated ImageNet-layout data set and 4 iterations; validates at the end
# and keeps the last checkpoint (iter_4.pth). Early exit is on: thresholds 0 (every image stops
# at the first exit) instead of tools/analysis_tools/dvt_thresholds.py's file; set
# `model.thresholds` to see images leave at different exits.
_base_ = '../dvt/dvt_deit-s_8xb128_in1k.py'
from mmdyn.utils.config_parts import toy_classification_run as __toy_run  # noqa: E402

data_root = 'data/toy_imagenet'
model = dict(
    arch=dict(_delete_=True, embed_dims=16, depth=2, num_heads=2, mlp_ratio=1),
    patch_size=8,
    exits=[2, 3, 4],
    thresholds=[0.0, 0.0],
    thresholds_file=None)
custom_hooks = [
    dict(type='mmdyn.DynamicStatsHook'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]

# the toy ImageNet run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root))
