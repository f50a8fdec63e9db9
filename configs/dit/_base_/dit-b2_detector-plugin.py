# What plugging DiT-B2 into one of mmdet's own detector configs changes (paper Table 2): the
# backbone, the neck's input widths, the optimiser and mmdyn's hooks. The backbone, neck widths
# and optimiser are variables, because mmdet's configs already hold `model` and `optim_wrapper`
# and mmengine refuses a key defined by two bases: configs list this file next to an `mmdet::`
# base and use them with `{{_base_.dit_...}}`. The hooks and `find_unused_parameters` (unreached
# stages get no gradient) are keys that no mmdet or mmseg base sets, so they are set here.
dit_b2_backbone = dict(
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
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth'))
dit_b2_neck_in_channels = [64, 128, 320, 512]
dit_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)
dit_custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]
custom_hooks = dit_custom_hooks
find_unused_parameters = True
