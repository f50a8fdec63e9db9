# DGE Table 1: PVT-Small + dynamic grained encoders on ImageNet-1k at 256x256 (paper: 80.2 top-1,
# 3.5 G FLOPs vs 6.2 G for PVT-S, +12.1 K parameters). Phi = {1, 2, 4}, region-wise routing,
# gamma = 0.5, lambda = 1, dense training over all granularities (as the official code).
_base_ = './pvt-s_4xb256_in1k-256px.py'

model = dict(
    backbone=dict(
        type='mmdyn.DGEPVT',
        dge=True,
        granularities=(1, 2, 4),
        budget=0.5,
        budget_weight=1.0,
        train_path='dense',
        # gamma is vtpack's ratio: the whole classifier's cost (static parts, patch embeddings
        # and the 512 x 1000 classifier included) over the static host's
        budget_convention='authors',
        budget_head_flops=512 * 1000))

custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
find_unused_parameters = True
# 20 warm-up epochs, as vtpack's DGE and DPVT scripts (--warmup-epochs 20)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20)]
