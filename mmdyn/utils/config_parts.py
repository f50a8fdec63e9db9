"""Config parts that several configs share and mmengine's inheritance cannot share.

mmengine merges a config onto one ``_base_`` chain, and several bases may not define the same
key. A CPU smoke config (``configs/_tiny_``) inherits its method's real config and replaces that
config's pipelines, data loaders, schedule and hooks, which the real config already defines, so
no second ``_base_`` file can bring them. Each smoke config therefore calls one function of this
module with an import whose name starts with ``__`` (mmengine drops such names from the config):

.. code-block:: python

    _base_ = '../dit/fpn_dit-b2_4xb4-40k_ade20k-512x512.py'
    from mmdyn.utils.config_parts import toy_segmentation_run as __toy_run  # noqa: E402

    data_root = 'data/toy_ade20k'
    crop_size = (64, 64)
    model = dict(...)
    locals().update(__toy_run(data_root, crop_size))

The resolved config is exactly what the keys written out would give (``Config.fromfile(p)
.to_dict()`` is unchanged, see ``tests/test_configs/test_config_parts.py``). The PVTv2 baselines
(``configs/baselines``) swap their codebase's backbone for mmdyn's PVTv2 the same way
(:func:`pvtv2_backbone`, :func:`pvtv2_adamw`).
"""
from typing import Dict, Sequence

__all__ = [
    'toy_segmentation_run', 'toy_detection_run', 'toy_classification_run', 'pvtv2_backbone',
    'pvtv2_adamw'
]

_PVT_RELEASES = 'https://github.com/whai362/PVT/releases/download/v2'


def _toy_loaders(train_dataset: dict, val_dataset: dict, val_batch: int) -> Dict:
    train = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=train_dataset)
    val = dict(batch_size=val_batch, num_workers=0, persistent_workers=False,
               dataset=val_dataset)
    return dict(train_dataloader=train, val_dataloader=val, test_dataloader=val)


def _toy_checkpoint() -> dict:
    """The last of 4 iterations kept as ``iter_4.pth``."""
    return dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1,
                save_last=True)


def _toy_runtime(**extra) -> Dict:
    return dict(env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
                randomness=dict(seed=0), **extra)


def toy_segmentation_run(data_root: str, crop_size: Sequence[int]) -> Dict:
    """mmseg on the generated ADE20K-layout set: ``crop_size`` crops of images resized to
    128x64 (scale 0.75-1.5 in training), batch 2, 4 iterations of poly decay, validation at the
    end (mIoU and mmdyn's complexity metric)."""
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(128, 64), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')
    ]
    evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
    return dict(
        train_pipeline=train_pipeline, test_pipeline=test_pipeline,
        **_toy_loaders(dict(data_root=data_root, pipeline=train_pipeline),
                       dict(data_root=data_root, pipeline=test_pipeline), 1),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4),
        param_scheduler=[
            dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=4, by_epoch=False)
        ],
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
            checkpoint=_toy_checkpoint(),
            visualization=dict(type='SegVisualizationHook', draw=False)),
        val_evaluator=evaluator, test_evaluator=evaluator, **_toy_runtime())


def _iter_schedule(loop: dict) -> Dict:
    """4 iterations (``loop``: how the train loop is named) at a constant learning rate
    instead of the base config's epochs."""
    return dict(
        train_cfg=dict(_delete_=True, **loop, max_iters=4, val_interval=4),
        param_scheduler=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=_toy_checkpoint()),
        log_processor=dict(by_epoch=False))


def toy_detection_run(data_root: str, img_scale: Sequence[int], with_mask: bool) -> Dict:
    """mmdet on the generated COCO-layout set: images resized to ``img_scale``, batch 2, 4
    iterations, validation at the end (box AP, and mask AP ``with_mask``, from the val
    annotations under ``data_root``, and mmdyn's complexity metric)."""
    load = dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)
    train_pipeline = [
        dict(type='LoadImageFromFile'), dict(load),
        dict(type='Resize', scale=img_scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=img_scale, keep_ratio=True), dict(load),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    ]
    evaluator = [
        dict(type='CocoMetric', ann_file=f'{data_root}annotations/instances_val2017.json',
             metric=['bbox', 'segm'] if with_mask else 'bbox', format_only=False,
             backend_args=None),
        dict(type='mmdyn.ComplexityMetric')
    ]
    run = dict(
        train_pipeline=train_pipeline, test_pipeline=test_pipeline,
        **_toy_loaders(dict(data_root=data_root, pipeline=train_pipeline),
                       dict(data_root=data_root, pipeline=test_pipeline), 1),
        val_cfg=dict(type='ValLoop'), test_cfg=dict(type='TestLoop'),
        val_evaluator=evaluator, test_evaluator=evaluator, **_toy_runtime())
    run.update(_iter_schedule(dict(type='IterBasedTrainLoop')))
    return run


def toy_classification_run(data_root: str) -> Dict:
    """mmpretrain on the generated ImageNet-layout set: 64x64 crops, batch 2, 4 iterations,
    validation at the end (top-1/5 accuracy and mmdyn's complexity metric)."""
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=64, backend='pillow'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=64, edge='short', backend='pillow'),
        dict(type='CenterCrop', crop_size=64),
        dict(type='PackInputs'),
    ]
    evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='mmdyn.ComplexityMetric')]
    run = dict(
        train_pipeline=train_pipeline, test_pipeline=test_pipeline,
        **_toy_loaders(dict(data_root=data_root, split='train', pipeline=train_pipeline),
                       dict(data_root=data_root, split='val', pipeline=test_pipeline), 2),
        val_evaluator=evaluator, test_evaluator=evaluator, **_toy_runtime())
    run.update(_iter_schedule(dict(by_epoch=False)))
    return run


def pvtv2_backbone(arch: str) -> dict:
    """mmdyn's PVTv2-``arch`` in place of the codebase's backbone (``_delete_``): drop path
    0.1, the four stages out, the official ImageNet weights."""
    return dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch=arch,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=f'{_PVT_RELEASES}/pvt_v2_{arch}.pth'))


def pvtv2_adamw() -> dict:
    """The PVTv2 recipe's optimizer wrapper for dense tasks: AdamW lr 2e-4, weight decay 1e-4,
    no gradient clipping (in place of the codebase's)."""
    return dict(
        _delete_=True,
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
        clip_grad=None)
