# DGE Table 2: Mask R-CNN 1x with PVT-Small + dynamic grained encoders on COCO (paper: 44.3 M
# params, 185 G backbone+head FLOPs at 800x1280, 40.1 box AP / 37.5 mask AP; static PVT-S:
# 251 G, 40.4 / 37.8). Phi = {1, 2, 4}, gamma = 0.5, lambda = 1; the static baseline's recipe.
# Start from a PVT-S + DGE ImageNet classifier when one is available (see the ADE20K config).
_base_ = './mask-rcnn_pvt-s_fpn_1x_coco.py'

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
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
find_unused_parameters = True
