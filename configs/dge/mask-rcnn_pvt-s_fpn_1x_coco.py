# Static baseline of DGE Table 2: Mask R-CNN with a PVT-Small (v1) backbone on COCO, 1x.
# The DGE paper's recipe (Sec. 4.2.1): shorter side 768 (longer side at most 1280, the 800/1333
# ratio of mmdet's 1x), 8 GPUs x 2 images, 90k iterations, AdamW lr 1e-4 (weight decay 1e-4 as
# PVT's detection recipe), divided by 10 at 60k and 80k (500 warm-up iterations, mmdet's 1x).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/coco-detection_90k.py',
]

model = dict(
    backbone={{_base_.pvt_s_backbone}},
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=5))
train_pipeline = {{_base_.dge_coco_pipelines.bbox_mask.train}}
test_pipeline = {{_base_.dge_coco_pipelines.bbox_mask.test}}
# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
