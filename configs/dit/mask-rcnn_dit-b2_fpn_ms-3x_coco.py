# mask-rcnn with DiT-B2 on COCO, 3x schedule (36 epochs) + multi-scale training (paper Table 3):
# shorter side random in [640, 800] (longer <= 1333), test shorter side 800; AdamW lr 1e-4,
# batch 16. Step decay at epochs 27 and 33 (mmdet's 3x convention; the paper does not say).
_base_ = ['./mask-rcnn_dit-b2_fpn_1x_coco.py', './_base_/coco_ms-3x.py']

train_pipeline = {{_base_.ms_3x_train_pipelines.bbox_mask}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs={{_base_.max_epochs}})
param_scheduler = {{_base_.ms_3x_param_scheduler}}
