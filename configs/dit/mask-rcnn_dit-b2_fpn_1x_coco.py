# Mask R-CNN with DiT-B2 on COCO, 1x schedule (paper Table 4: 46.4 box AP / 42.2 mask AP;
# PVTv2-B2 45.3 / 41.2). Paper recipe (Sec. 4.2): AdamW lr 1e-4, batch 16 (8 GPUs x 2),
# 12 epochs, shorter side 800. Weight decay 1e-4 (PVTv2 recipe; the paper does not say).
_base_ = ['../baselines/mask-rcnn_pvtv2-b2_fpn_1x_coco.py', './_base_/dense-backbones.py']
# (mmdyn's hooks and find_unused_parameters come with _base_/dit-b2_detector-plugin.py)

model = dict(backbone={{_base_.dit_b2_backbone}})
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
val_evaluator = {{_base_.dit_coco_evaluators.bbox_segm}}
test_evaluator = val_evaluator
