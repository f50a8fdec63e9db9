"""configs/dit: the PVTv2 baselines of the dense DiT configs (COCO RetinaNet / Mask R-CNN 1x and
3x + multi-scale, the Table 2 detectors, ADE20K Semantic FPN) are their DiT config with only the
backbone swapped for the static PVTv2 of the same size and the DiT-only hooks / metric dropped."""
import copy
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIT = osp.join(REPO, 'configs', 'dit')

BASELINES = (
    [f'{d}_pvtv2-{b}_fpn_1x_coco.py' for d in ('retinanet', 'mask-rcnn')
     for b in ('b1', 'b2', 'b3', 'b4')]
    + [f'{d}_pvtv2-{b}_fpn_ms-3x_coco.py' for d in ('retinanet', 'mask-rcnn')
       for b in ('b2', 'b3', 'b4')]
    + [f'{d}_pvtv2-b2_fpn_1x_coco.py' for d in ('cascade-mask-rcnn', 'atss', 'gfl',
                                                 'sparse-rcnn')]
    + [f'fpn_pvtv2-{b}_4xb4-40k_ade20k-512x512.py' for b in ('b1', 'b2', 'b3', 'b4')])
DEPTHS = {'b1': [2, 2, 2, 2], 'b2': [3, 4, 6, 3], 'b3': [3, 4, 18, 3], 'b4': [3, 8, 27, 3]}
DIT_ONLY_HOOKS = ['mmdyn.DynamicStatsHook', 'mmdyn.GateMomentumHook']


def dit_of(name):
    return name.replace('_pvtv2-', '_dit-')


def size_of(name):
    return name.split('pvtv2-')[1][:2]


pytestmark = pytest.mark.usefixtures('one_thread')


@functools.lru_cache(maxsize=None)
def _load(name):
    return Config.fromfile(osp.join(DIT, name))


def load(name):
    return copy.deepcopy(_load(name))


def build(cfg):
    init_default_scope(cfg.default_scope)
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_every_baseline_is_on_disk_and_has_a_dit_config():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(DIT, '*_pvtv2-*.py')))
    assert found == sorted(BASELINES)
    for name in BASELINES:
        assert osp.isfile(osp.join(DIT, dit_of(name)))
        assert open(osp.join(DIT, name)).read().count(f"_base_ = './{dit_of(name)}'") == 1


@pytest.mark.parametrize('name', BASELINES)
def test_equal_to_its_dit_config_but_the_backbone(name):
    size = size_of(name)
    pvt = load(name).to_dict()
    dit = load(dit_of(name)).to_dict()
    dit_bb = dit['model'].pop('backbone')
    assert (dit_bb['type'], dit_bb['arch']) == ('mmdyn.DiT', size)
    # the static PVTv2 of the same size, same stochastic depth, outputs and ImageNet weights
    assert pvt['model'].pop('backbone') == dict(
        type='mmdyn.PVTv2', arch=size, drop_path_rate=dit_bb['drop_path_rate'],
        out_indices=dit_bb['out_indices'], init_cfg=dit_bb['init_cfg'])
    assert dit_bb['init_cfg']['checkpoint'].endswith(f'/pvt_v2_{size}.pth')
    # dropped: exactly the DiT-only hooks, the complexity metric and find_unused_parameters
    assert [h['type'] for h in dit['custom_hooks']] == DIT_ONLY_HOOKS
    assert pvt['custom_hooks'] == []
    assert dit['find_unused_parameters'] is True and pvt['find_unused_parameters'] is False
    for key in ('val_evaluator', 'test_evaluator'):
        kept = [e for e in dit[key] if e['type'] != 'mmdyn.ComplexityMetric']
        assert len(kept) == len(dit[key]) - 1
        assert pvt[key] == kept
    for key in ('custom_hooks', 'find_unused_parameters', 'val_evaluator', 'test_evaluator'):
        pvt.pop(key)
        dit.pop(key)
    # everything else (schedule, optimiser, data, neck, heads, runtime) resolves equal
    assert pvt == dit


@pytest.mark.parametrize('name', BASELINES)
def test_full_size_builds_and_only_the_backbone_differs(name):
    """Built at full size (meta device): the backbone is PVTv2 of the size, the neck reads its
    stage widths, and the model outside the backbone has the DiT model's parameters."""
    with torch.device('meta'):
        pvt = build(load(name))
        dit = build(load(dit_of(name)))
    bb = pvt.backbone
    assert type(bb).__name__ == 'PVTv2' and type(dit.backbone).__name__ == 'DiT'
    assert bb.embed_dims == [64, 128, 320, 512] and bb.depths == DEPTHS[size_of(name)]
    assert list(pvt.neck.in_channels) == [64, 128, 320, 512]
    assert type(pvt) is type(dit)
    assert (n_params(pvt) - n_params(bb)) == (n_params(dit) - n_params(dit.backbone))
    # the DiT grid holds the PVTv2 of the same size (its PVTv2 path) and more
    assert n_params(dit.backbone) > n_params(bb)


@pytest.mark.parametrize('name', ['retinanet_pvtv2-b1_fpn_1x_coco.py',
                                  'mask-rcnn_pvtv2-b3_fpn_ms-3x_coco.py'])
def test_backbone_flops_equal_the_imagenet_baseline(name):
    """The detector's backbone costs what the PVTv2 ImageNet baseline of the size costs (224²),
    and what the DiT config takes as C_base."""
    size = size_of(name)
    with torch.device('meta'):
        det = build(load(name))
        cls = build(load(f'pvtv2-{size}_8xb128_in1k.py'))
        dit = build(load(dit_of(name)))
    flops = det.backbone.static_flops((224, 224))
    assert flops == cls.backbone.static_flops((224, 224))
    assert flops == dit.backbone.base_flops((224, 224))
    assert n_params(det.backbone) == n_params(cls.backbone)


def test_tiny_retinanet_baseline_runs():
    """One baseline with a tiny PVTv2 runs through mmdet's RetinaNet (4 maps into the FPN)."""
    cfg = load('retinanet_pvtv2-b2_fpn_1x_coco.py')
    cfg.model.backbone.arch = dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2],
                                   sr_ratios=[4, 2, 2, 1])
    cfg.model.backbone.init_cfg = None
    cfg.model.neck.in_channels = [8, 16, 16, 32]
    model = build(cfg).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96), mode='tensor')
    cls_scores, _ = outs
    assert [tuple(c.shape[-2:]) for c in cls_scores] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    assert cls_scores[0].shape[1] == 9 * 80
