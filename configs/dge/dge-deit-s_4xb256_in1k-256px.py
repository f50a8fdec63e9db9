# DGE on DeiT-S at 256x256 (official README: 80.1 top-1, 3.5 G MACs vs 80.6 / 6.1 G).
# Phi = {1, 2, 4}, gamma = 0.5, lambda = 1; the cls token always runs (vanilla path).
_base_ = './deit-s_4xb256_in1k-256px.py'

model = dict(
    backbone=dict(dge=True, granularities=(1, 2, 4), budget=0.5, budget_weight=1.0,
                  train_path='dense',
                  # gamma is vtpack's ratio (whole model, static parts and the 384 x 1000
                  # classifier included)
                  budget_convention='authors', budget_head_flops=384 * 1000))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
find_unused_parameters = True
# 20 warm-up epochs, as vtpack's DGE and DPVT scripts (--warmup-epochs 20)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20)]
