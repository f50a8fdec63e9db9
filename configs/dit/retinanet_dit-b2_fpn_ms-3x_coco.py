# retinanet with DiT-B2 on COCO, 3x schedule (36 epochs) + multi-scale training (paper Table 3):
# shorter side random in [640, 800] (longer <= 1333), test shorter side 800; AdamW lr 1e-4,
# batch 16. Step decay at epochs 27 and 33 (mmdet's 3x convention; the paper does not say).
_base_ = './retinanet_dit-b2_fpn_1x_coco.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
