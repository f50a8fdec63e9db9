# mmdet's own Cascade Mask R-CNN R-50-FPN multi-scale 3x COCO config with the ResNet replaced by
# DiT-B2 (dynamic routing over PVTv2-B2). The DiT plug-in (backbone, neck widths, optimiser,
# hooks) is inherited from the repository's configs/dit/_base_/dit-b2_detector-plugin.py.
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py',
    '../../../configs/dit/_base_/dit-b2_detector-plugin.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.dit_b2_backbone}},
    neck=dict(in_channels={{_base_.dit_b2_neck_in_channels}}))
optim_wrapper = {{_base_.dit_optim_wrapper}}
custom_hooks = {{_base_.dit_custom_hooks}}

val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
find_unused_parameters = True  # skipped layers and scales leave weights unused
