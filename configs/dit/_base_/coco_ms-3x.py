# COCO 3x schedule (36 epochs) with multi-scale training, for a 1x detector config listed next to
# this file: shorter side random in [640, 800] (longer <= 1333), step decay at epochs 27 and 33
# (mmdet's 3x convention). `train_pipeline`, `train_cfg` and `param_scheduler` are already keys of
# the 1x config (mmengine refuses a key defined by two bases), so they are variables here that the
# config uses with `{{_base_.ms_3x_...}}`.
max_epochs = 36


def _train_pipeline(**annotations):
    return [
        dict(type='LoadImageFromFile', backend_args=None),
        dict(type='LoadAnnotations', with_bbox=True, **annotations),
        dict(type='RandomChoiceResize',
             scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768),
                     (1333, 800)],
             keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]


# training pipelines for box-only detectors and for detectors with a mask head
ms_3x_train_pipelines = dict(bbox=_train_pipeline(), bbox_mask=_train_pipeline(with_mask=True))
ms_3x_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
