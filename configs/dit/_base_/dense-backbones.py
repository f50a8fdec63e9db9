# What the dense DiT configs (COCO detectors, ADE20K Semantic FPN) and their PVTv2 baselines
# share beyond the DiT-B2 plug-in this file inherits (DiT-B2, neck widths, optimiser, hooks): the
# backbone of each size and the COCO evaluators, as variables (mmdet's / mmseg's bases already
# hold `model` and the evaluators, and mmengine refuses a key defined by two bases). A config
# picks one with `{{_base_.<name>.<size>}}`; mmengine copies the variables of a base into every
# config that inherits it, where nothing reads them.
_base_ = './dit-b2_detector-plugin.py'


def _checkpoint(size):
    """PVTv2-Bn ImageNet weights: the PVTv2 baselines load them, DiT-Bn starts from them."""
    return f'https://github.com/whai362/PVT/releases/download/v2/pvt_v2_{size}.pth'


# DiT-Bn for Semantic FPN: what changes from DiT-B2 (the budgets of the ImageNet configs)
dit_ade_sizes = dict(
    b1=dict(arch='b1', budget=2.0 / 2.1, init_cfg=dict(checkpoint=_checkpoint('b1'))),
    b3=dict(arch='b3', budget=6.8 / 6.9, init_cfg=dict(checkpoint=_checkpoint('b3'))),
    b4=dict(arch='b4', budget=9.9 / 10.1, init_cfg=dict(checkpoint=_checkpoint('b4'))))
# the detectors take PVTv2's detection stochastic depth, 0.1 at every size (the official
# detection backbones' value; 0.3 for B3-B5 is PVTv2's ImageNet setting), as Semantic FPN does
dit_coco_sizes = dict(
    b1=dict(dit_ade_sizes['b1'], drop_path_rate=0.1),
    b3=dict(dit_ade_sizes['b3'], drop_path_rate=0.1),
    b4=dict(dit_ade_sizes['b4'], drop_path_rate=0.1))


def _pvtv2(size, drop_path_rate):
    """The static PVTv2 of DiT-Bn: same size, stochastic depth, outputs and weights."""
    return dict(
        type='mmdyn.PVTv2',
        arch=size,
        drop_path_rate=drop_path_rate,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=_checkpoint(size)))


pvtv2_ade_sizes = {size: _pvtv2(size, 0.1) for size in ('b1', 'b2', 'b3', 'b4')}
pvtv2_coco_sizes = dict(
    b1=_pvtv2('b1', 0.1), b2=_pvtv2('b2', 0.1), b3=_pvtv2('b3', 0.1), b4=_pvtv2('b4', 0.1))


def _coco_evaluators(metric):
    """The DiT detectors' evaluators: the COCO metric, then the complexity metric (the PVTv2
    baselines keep all but the last)."""
    return [
        dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
             metric=metric, format_only=False, backend_args=None),
        dict(type='mmdyn.ComplexityMetric')
    ]


dit_coco_evaluators = dict(
    bbox=_coco_evaluators('bbox'), bbox_segm=_coco_evaluators(['bbox', 'segm']))
