# CPU smoke config (not for results): DGE Table 2's Mask R-CNN + DGE-PVT config
# (../dge/mask-rcnn_dge-pvt-s_fpn_1x_coco.py) with a tiny PVT and narrow heads on 128x96 images
# of the generated COCO-layout data set (tools/dataset_converters/make_toy_dataset.py --layout
# coco) and 4 iterations; validates at the end (box and mask AP) and keeps the last checkpoint
# (iter_4.pth). When the data root moves, move the metric's ann_file with it
# (val_evaluator.0.ann_file / test_evaluator.0.ann_file).
_base_ = '../dge/mask-rcnn_dge-pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 16, 32, 32], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32),
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(num_convs=1, in_channels=16, conv_out_channels=16)),
    # fewer proposals and sampled RoIs than the real 2000 / 512 (CPU)
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    # every box is kept (score_thr 0), so that an untrained smoke model still predicts some
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50), rcnn=dict(score_thr=0.0, max_per_img=20)))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/toy_coco/annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator

data_root = 'data/toy_coco/'
img_scale = (128, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
