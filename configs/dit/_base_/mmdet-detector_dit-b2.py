# DiT-B2 in one of mmdet's own detector configs (paper Table 2): list this file next to an
# `mmdet::` config. Over the plug-in (_base_/dit-b2_detector-plugin.py: hooks,
# find_unused_parameters, and the backbone, neck widths and optimiser as variables) and the
# per-size variables (_base_/dense-backbones.py: PVTv2-B2 for the baseline, COCO evaluators) it
# adds mmdyn's imports, which mmdet's configs do not set (the 1x RetinaNet / Mask R-CNN configs
# inherit them from ../baselines/, so they list _base_/dense-backbones.py instead). The config
# itself sets `model` (backbone and neck widths), `optim_wrapper` and the evaluators from the
# variables, as mmdet's config already holds those keys and mmengine refuses a key defined by two
# bases.
_base_ = './dense-backbones.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
