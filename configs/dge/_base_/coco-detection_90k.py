# The DGE paper's COCO detection settings (Sec. 4.2.1), shared by the Mask R-CNN and RetinaNet
# configs, which list this file next to mmdet's model and dataset bases: mmdet's default runtime,
# 90k iterations (validation and checkpoints every 10k), AdamW lr 1e-4 (weight decay 1e-4 as PVT's
# detection recipe) divided by 10 at 60k and 80k after 500 warm-up iterations (mmdet's 1x).
# The PVT-Small backbone and the pipelines (shorter side 768, longer side at most 1280: the
# 800/1333 ratio of mmdet's 1x) are variables, because the model and dataset bases already hold
# `model` and the pipelines and mmengine refuses a key defined by two bases.
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

pvt_s_backbone = dict(
    _delete_=True,
    type='mmdyn.PVT',
    arch='small',
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth'))
img_scale = (1280, 768)


def _pipelines(**annotations):
    load_annotations = dict(type='LoadAnnotations', with_bbox=True, **annotations)
    return dict(
        train=[
            dict(type='LoadImageFromFile', backend_args=None),
            load_annotations,
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackDetInputs')
        ],
        test=[
            dict(type='LoadImageFromFile', backend_args=None),
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            load_annotations,
            dict(type='PackDetInputs',
                 meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
        ])


# train / test pipelines of box-only detectors and of detectors with a mask head
dge_coco_pipelines = dict(bbox=_pipelines(), bbox_mask=_pipelines(with_mask=True))

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=90000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=90000, by_epoch=False, milestones=[60000, 80000],
         gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=16)
