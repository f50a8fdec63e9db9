# DiT-B2 plugged into mmdet's own gfl R-50-FPN 1x config (paper Table 2 at 1280x800:
# 235 GFLOPs, 51.3 AP (PVTv2-B2 261, 50.2)): only the backbone, the neck's input widths and the optimiser change.
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.DiT',
        arch='b2',
        num_stages=4,
        routing='dynamic',
        out_nodes='pvt',
        budget=3.8 / 4.0,
        budget_weight=0.8,
        gate_momentum=0.999,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)

custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric='bbox', format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
find_unused_parameters = True
