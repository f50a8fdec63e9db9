# Mask R-CNN with DiT-B2 on COCO, 1x schedule (paper Table 4: 46.4 box AP / 42.2 mask AP;
# PVTv2-B2 45.3 / 41.2). Paper recipe (Sec. 4.2): AdamW lr 1e-4, batch 16 (8 GPUs x 2),
# 12 epochs, shorter side 800. Weight decay 1e-4 (PVTv2 recipe; the paper does not say).
_base_ = '../baselines/mask-rcnn_pvtv2-b2_fpn_1x_coco.py'

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
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth')))

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))

custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
find_unused_parameters = True
