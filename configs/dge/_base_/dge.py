# Dynamic grained encoders on a static PVT detector / segmentor (paper settings: Phi = {1, 2, 4},
# budget gamma = 0.5, lambda = 1, dense training path): list this file next to the static
# config. It sets mmdyn's statistics hook and `find_unused_parameters` (keys no static config
# sets); the backbone change and the evaluators (the task's metric, then the complexity metric)
# are variables, because the static config already holds `model` and the evaluators and mmengine
# refuses a key defined by two bases:
#   model = dict(backbone={{_base_.dge_backbone}})
#   val_evaluator = {{_base_.dge_evaluators.<coco_bbox | coco_bbox_segm | ade20k>}}
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
find_unused_parameters = True

dge_backbone = dict(
    type='mmdyn.DGEPVT',
    granularities=(1, 2, 4),
    budget=0.5,
    budget_weight=1.0,
    train_path='dense')


def _coco(metric):
    return dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
                metric=metric, format_only=False, backend_args=None)


dge_evaluators = {
    task: [metric, dict(type='mmdyn.ComplexityMetric')]
    for task, metric in [('coco_bbox', _coco('bbox')), ('coco_bbox_segm', _coco(['bbox', 'segm'])),
                         ('ade20k', dict(type='IoUMetric', iou_metrics=['mIoU']))]
}
