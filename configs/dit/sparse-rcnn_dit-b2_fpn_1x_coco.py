# DiT-B2 plugged into mmdet's own sparse-rcnn R-50-FPN 1x config (paper Table 2 at 1280x800:
# 202 GFLOPs, 51.3 AP (PVTv2-B2 215, 50.1)): the backbone, the neck's input widths and what the
# paper takes from PVTv2's Sparse R-CNN ("following the approach of PVTv2"; whai362/PVT
# detection/configs/sparse_rcnn_pvt_v2_b2_fpn_300_proposals_*): 300 proposals (the paper's
# 215 GFLOPs for PVTv2-B2 are those of 300; mmdet's 1x config has 100) and its optimiser, AdamW
# lr 2.5e-5 / 1.4, weight decay 1e-4, gradient clipping 1.0 (the paper's lr 1e-4 is given for
# RetinaNet / Mask R-CNN). The 1x schedule and mmdet's 1x data pipeline stay (the paper: 1x).
_base_ = ['mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet-detector_dit-b2.py']

num_proposals = 300
model = dict(
    backbone={{_base_.dit_b2_backbone}}, neck=dict(in_channels={{_base_.dit_b2_neck_in_channels}}),
    rpn_head=dict(num_proposals=num_proposals),
    test_cfg=dict(rcnn=dict(max_per_img=num_proposals)))
optim_wrapper = dict(optimizer=dict(lr=2.5e-5 / 1.4))
val_evaluator = {{_base_.dit_coco_evaluators.bbox}}
test_evaluator = val_evaluator
