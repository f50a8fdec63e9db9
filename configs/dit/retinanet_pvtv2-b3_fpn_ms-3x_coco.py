# PVTv2-B3 baseline of retinanet_dit-b3_fpn_ms-3x_coco.py (RetinaNet, COCO 3x + multi-scale): the
# DiT config with the backbone replaced by the static PVTv2 of the same size (same stochastic depth,
# same ImageNet checkpoint), without the gate hooks and the complexity metric; schedule, optimiser
# and data are DiT's.
_base_ = './retinanet_dit-b3_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch='b3',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b3.pth')))

custom_hooks = []
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric='bbox', format_only=False, backend_args=None)
]
test_evaluator = val_evaluator
find_unused_parameters = False
