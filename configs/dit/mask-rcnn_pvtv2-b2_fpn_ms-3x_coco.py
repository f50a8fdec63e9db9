# PVTv2-B2 baseline of mask-rcnn_dit-b2_fpn_ms-3x_coco.py (Mask R-CNN, COCO 3x + multi-scale): the
# DiT config with the backbone replaced by the static PVTv2 of the same size (same stochastic depth,
# same ImageNet checkpoint), without the gate hooks and the complexity metric; schedule, optimiser
# and data are DiT's.
_base_ = './mask-rcnn_dit-b2_fpn_ms-3x_coco.py'

model = dict(backbone=dict(_delete_=True, **_base_.pvtv2_coco_sizes.b2))
custom_hooks = []
val_evaluator = _base_.val_evaluator[:-1]  # all but mmdyn.ComplexityMetric
test_evaluator = val_evaluator
find_unused_parameters = False
