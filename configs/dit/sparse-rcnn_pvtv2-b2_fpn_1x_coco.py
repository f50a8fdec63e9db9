# PVTv2-B2 baseline of sparse-rcnn_dit-b2_fpn_1x_coco.py (mmdet's Sparse R-CNN R-50-FPN 1x with
# PVTv2-B2, paper Table 2): the DiT config with the backbone replaced by the static PVTv2-B2,
# without the gate hooks and the complexity metric; neck widths, optimiser, schedule and data are
# DiT's.
_base_ = './sparse-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(backbone=dict(_delete_=True, **_base_.pvtv2_coco_sizes.b2))
custom_hooks = []
val_evaluator = _base_.val_evaluator[:-1]  # all but mmdyn.ComplexityMetric
test_evaluator = val_evaluator
find_unused_parameters = False
