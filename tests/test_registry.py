"""mmdyn's registries and ``type='mmdyn.<Name>'`` from mmdet, mmseg and mmpretrain scopes."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope, init_default_scope

import mmdyn  # noqa: F401
from mmdyn import registry


class _TinyBackbone(nn.Module):
    """Four NCHW maps at strides 4, 8, 16, 32 (a stand-in with the backbone contract)."""

    def __init__(self, channels=(8, 16, 32, 64)):
        super().__init__()
        ch = [3] + list(channels)
        self.stages = nn.ModuleList(
            nn.Conv2d(ch[i], ch[i + 1], 4 if i == 0 else 2, 4 if i == 0 else 2)
            for i in range(4))

    def forward(self, x):
        outs = []
        for s in self.stages:
            x = s(x)
            outs.append(x)
        return tuple(outs)


registry.MODELS.register_module('RegistryTestBackbone', module=_TinyBackbone, force=True)


def _inherit(tmp_path, base):
    """Load a config that inherits ``base`` (an ``mmdet::``/``mmseg::``/``mmpretrain::`` path)."""
    from mmengine.config import Config
    p = tmp_path / 'cfg.py'
    p.write_text(f"_base_ = [{base!r}]\n"
                 "custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)\n")
    return Config.fromfile(str(p))


def test_registries_are_children_of_the_root_with_scope_mmdyn():
    from mmengine import registry as root
    pairs = [(registry.MODELS, root.MODELS), (registry.HOOKS, root.HOOKS),
             (registry.METRICS, root.METRICS), (registry.VISUALIZERS, root.VISUALIZERS),
             (registry.DATASETS, root.DATASETS), (registry.TRANSFORMS, root.TRANSFORMS)]
    for child, parent in pairs:
        assert child.scope == 'mmdyn'
        assert child.parent is parent
        assert parent._search_child('mmdyn') is child


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_prefixed_type_builds_in_every_codebase_scope(scope):
    import importlib
    reg = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        m = reg.build(dict(type='mmdyn.RegistryTestBackbone'))
        assert isinstance(m, _TinyBackbone)
        with pytest.raises(KeyError, match='not in the'):
            reg.build(dict(type='RegistryTestBackbone'))  # plain name: not in that scope


def test_mmdyn_backbone_inside_mmdet_config(tmp_path):
    from mmdet.registry import MODELS
    cfg = _inherit(tmp_path, 'mmdet::pvt/retinanet_pvtv2-b0_fpn_1x_coco.py')
    cfg.model.backbone = dict(type='mmdyn.RegistryTestBackbone')
    cfg.model.neck.in_channels = [8, 16, 32, 64]
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, _TinyBackbone)
    feats = model.extract_feat(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [8, 4, 2, 1, 1]


def test_mmdyn_backbone_inside_mmseg_config(tmp_path):
    from mmseg.registry import MODELS
    cfg = _inherit(tmp_path, 'mmseg::_base_/models/fpn_r50.py')
    cfg.model.backbone = dict(type='mmdyn.RegistryTestBackbone')
    cfg.model.neck.in_channels = [8, 16, 32, 64]
    cfg.model.pretrained = None
    cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()
    out = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, cfg.model.decode_head.num_classes, 16, 16)


def test_mmdyn_backbone_inside_mmpretrain_config(tmp_path):
    from mmpretrain.registry import MODELS
    cfg = _inherit(tmp_path, 'mmpretrain::_base_/models/resnet18.py')
    cfg.model.backbone = dict(type='mmdyn.RegistryTestBackbone')
    cfg.model.head.in_channels = 64
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model).eval()
    out = model(torch.rand(2, 3, 64, 64), mode='tensor')
    assert out.shape == (2, 1000)


def test_build_in_mmdyn_scope_resolves_plain_names_under_another_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        m = registry.build_in_mmdyn_scope(registry.MODELS, dict(type='RegistryTestBackbone'))
    assert isinstance(m, _TinyBackbone)
