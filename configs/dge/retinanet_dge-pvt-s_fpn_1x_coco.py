# RetinaNet 1x with PVT-Small + DGE (Phi = {1, 2, 4}, gamma = 0.5, lambda = 1) on COCO; the
# static baseline's recipe. Not in the paper (which has only Mask R-CNN results).
_base_ = ['./retinanet_pvt-s_fpn_1x_coco.py', './_base_/dge.py']

model = dict(backbone={{_base_.dge_backbone}})
val_evaluator = {{_base_.dge_evaluators.coco_bbox}}
test_evaluator = val_evaluator
