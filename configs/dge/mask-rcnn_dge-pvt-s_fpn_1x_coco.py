# DGE Table 2: Mask R-CNN 1x with PVT-Small + dynamic grained encoders on COCO (paper: 44.3 M
# params, 185 G backbone+head FLOPs at 800x1280, 40.1 box AP / 37.5 mask AP; static PVT-S:
# 251 G, 40.4 / 37.8). Phi = {1, 2, 4}, gamma = 0.5, lambda = 1; the static baseline's recipe.
# Start from a PVT-S + DGE ImageNet classifier when one is available (see the ADE20K config).
_base_ = ['./mask-rcnn_pvt-s_fpn_1x_coco.py', './_base_/dge.py']

model = dict(backbone={{_base_.dge_backbone}})
val_evaluator = {{_base_.dge_evaluators.coco_bbox_segm}}
test_evaluator = val_evaluator
