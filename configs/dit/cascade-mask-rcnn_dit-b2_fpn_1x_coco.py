# DiT-B2 plugged into mmdet's own cascade-mask-rcnn R-50-FPN 1x config (paper Table 2 at 1280x800:
# 745 GFLOPs, 52.3 AP (PVTv2-B2 788, 51.1)): only the backbone, the neck's input widths and the optimiser change.
_base_ = ['mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet-detector_dit-b2.py']

model = dict(
    backbone={{_base_.dit_b2_backbone}}, neck=dict(in_channels={{_base_.dit_b2_neck_in_channels}}))
optim_wrapper = {{_base_.dit_optim_wrapper}}
val_evaluator = {{_base_.dit_coco_evaluators.bbox_segm}}
test_evaluator = val_evaluator
