# DiT-B2 plugged into mmdet's own sparse-rcnn R-50-FPN 1x config (paper Table 2 at 1280x800:
# 202 GFLOPs, 51.3 AP (PVTv2-B2 215, 50.1)): only the backbone, the neck's input widths and the optimiser change.
_base_ = ['mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet-detector_dit-b2.py']

model = dict(
    backbone={{_base_.dit_b2_backbone}}, neck=dict(in_channels={{_base_.dit_b2_neck_in_channels}}))
# Sparse R-CNN keeps its own optimiser (AdamW lr 2.5e-5, weight decay 1e-4, gradient clipping
# 1.0): the paper's lr 1e-4 is given for RetinaNet / Mask R-CNN.
val_evaluator = {{_base_.dit_coco_evaluators.bbox}}
test_evaluator = val_evaluator
