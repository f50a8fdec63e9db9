# CPU smoke config (not for results): DiT's RetinaNet config
# (../dit/retinanet_dit-b2_fpn_1x_coco.py) with a tiny four-stage DiT and a narrow head on
# 128x96 images of the generated COCO-layout data set and 4 iterations; validates at the end
# (box AP) and keeps the last checkpoint (iter_4.pth). When the data root moves, move the
# metric's ann_file with it (val_evaluator.0.ann_file / test_evaluator.0.ann_file).
_base_ = '../dit/retinanet_dit-b2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1),
    # every box is kept (score_thr 0), so that an untrained smoke model still predicts some
    test_cfg=dict(nms_pre=200, score_thr=0.0, max_per_img=20))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/toy_coco/annotations/instances_val2017.json',
         metric='bbox', format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator

data_root = 'data/toy_coco/'
img_scale = (128, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=False),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=False),
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
