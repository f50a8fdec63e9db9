# RetinaNet 1x with PVT-Small + DGE (Phi = {1, 2, 4}, gamma = 0.5, lambda = 1) on COCO; the
# static baseline's recipe. Not in the paper (which has only Mask R-CNN results).
_base_ = './retinanet_pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmdyn.DGEPVT',
        granularities=(1, 2, 4),
        budget=0.5,
        budget_weight=1.0,
        train_path='dense'))

custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric='bbox', format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
find_unused_parameters = True
