# Static baseline: RetinaNet 1x with a PVT-Small (v1) backbone on COCO, with the DGE paper's
# detection settings (Sec. 4.2.1: shorter side 768, 8 GPUs x 2 images, AdamW lr 1e-4, 90k
# iterations, steps at 60k / 80k). The paper reports no RetinaNet numbers; PVT's RetinaNet 1x
# with PVT-S: 34.2 M params, 40.4 AP at shorter side 800.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './_base_/coco-detection_90k.py',
]

model = dict(
    backbone={{_base_.pvt_s_backbone}},
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, start_level=1,
              add_extra_convs='on_input', num_outs=5))
train_pipeline = {{_base_.dge_coco_pipelines.bbox.train}}
test_pipeline = {{_base_.dge_coco_pipelines.bbox.test}}
# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
