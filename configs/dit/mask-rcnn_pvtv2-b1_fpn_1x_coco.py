# PVTv2-B1 baseline of mask-rcnn_dit-b1_fpn_1x_coco.py (Mask R-CNN, COCO 1x): the DiT config with
# the backbone replaced by the static PVTv2 of the same size (same stochastic depth, same ImageNet
# checkpoint), without the gate hooks and the complexity metric; schedule, optimiser and data are
# DiT's.
_base_ = './mask-rcnn_dit-b1_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch='b1',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth')))

custom_hooks = []
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None)
]
test_evaluator = val_evaluator
find_unused_parameters = False
