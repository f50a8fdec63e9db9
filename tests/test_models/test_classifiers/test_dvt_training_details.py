"""DVT training details as the public DVT code has them (blackfeather-wang/Dynamic-Vision-
Transformer): the T2T tokenizer's dropouts (models/token_performer.py: dp1 = dp2 = 0.1), the
initialisation (models/t2t_vit.py, timm/models/vision_transformer.py: every Linear truncated
normal 0.02 with zero bias, class token truncated normal 0.02, the 1x1-conv relation MLP with
PyTorch's default init, LayerNorms 1 / 0), and the optimizer of main.py (timm's
create_optimizer on the cascade, which has no no_weight_decay(): only 1-D parameters and biases
skip weight decay; no gradient clipping)."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmdyn.models.backbones.t2t_vit import T2TViT
from mmdyn.models.classifiers.dvt import DVTClassifier

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ARCH = dict(embed_dims=64, depth=2, num_heads=2, mlp_ratio=2)
EXITS = [dict(grid=2, soft_split=(14, 8, 3)), dict(grid=4, soft_split=(7, 4, 2))]


def t2t_dvt(**kw):
    torch.manual_seed(0)
    m = DVTClassifier(arch=ARCH, exits=EXITS, host='t2t', img_size=64, num_classes=50,
                      thresholds=[1.0], backbone_cfg=dict(token_dims=8), **kw)
    m.init_weights()
    return m


def test_t2t_tokenizer_dropouts():
    """Two Dropout(0.1) per Performer token layer (after the attention projection, at the end
    of the MLP): active in training, off in eval; token_drop_rate=0 removes them."""
    bb = T2TViT(ARCH, img_size=64, token_dims=8)
    drops = [m.p for tok in (bb.token1, bb.token2) for m in tok.modules()
             if isinstance(m, nn.Dropout)]
    assert drops == [0.1] * 4
    # no other dropout is active (the blocks' dropouts are 0 as in the public code)
    assert sum(m.p > 0 for m in bb.modules() if isinstance(m, nn.Dropout)) == 4
    assert bb.token1.drop.p == 0.1 and isinstance(bb.token1.mlp[3], nn.Dropout)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    bb.train()
    with torch.no_grad():
        a, b = bb(x)[0], bb(x)[0]
    assert not torch.allclose(a, b)
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(x)[0], bb(x)[0])
    off = T2TViT(ARCH, img_size=64, token_dims=8, token_drop_rate=0.0).train()
    with torch.no_grad():
        torch.testing.assert_close(off(x)[0], off(x)[0])
    # the DVT exits' tokenizers have them too
    m = t2t_dvt()
    assert [mod.p for e in m.exits for mod in e.backbone.modules()
            if isinstance(mod, nn.Dropout) and mod.p > 0] == [0.1] * 8


def _std(t):
    return t.detach().float().std().item()


def test_initialisation():
    m = t2t_dvt(feature_reuse=True, relation_reuse=True)
    for e in m.exits:
        bb = e.backbone
        # class token: truncated normal std 0.02 (64 values: sample std within +-4 se)
        assert 0.012 < _std(bb.cls_token) < 0.028
        for name, mod in bb.named_modules():
            if isinstance(mod, nn.Linear):
                assert 0.015 < _std(mod.weight) < 0.025, name
                if mod.bias is not None:
                    assert torch.all(mod.bias == 0), name
            if isinstance(mod, nn.LayerNorm):
                assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0), name
        # head: truncated normal 0.02, zero bias (3200 values)
        assert 0.019 < _std(e.head.fc.weight) < 0.021
        assert torch.all(e.head.fc.bias == 0)
    e = m.exits[1]
    for mod in e.feature_modules.modules():
        if isinstance(mod, nn.Linear):
            assert 0.015 < _std(mod.weight) < 0.025 and torch.all(mod.bias == 0)
    # relation MLP: PyTorch's default init of a 1x1 conv / Linear with fan-in c:
    # U(-1/sqrt(c), 1/sqrt(c)) for weights and biases (c = heads * depth = 4 -> bound 0.5;
    # fc2: fan-in 12 -> bound 0.289)
    rel = e.relation_module
    for fc, fan_in in ((rel.fc1, 4), (rel.fc2, 12)):
        bound = 1 / math.sqrt(fan_in)
        for t in (fc.weight, fc.bias):
            assert t.abs().max() <= bound + 1e-7
            assert t.abs().max() > 0.6 * bound
        # a uniform variable on [-b, b] has std b / sqrt(3)
        assert abs(_std(fc.weight) - bound / math.sqrt(3)) < 0.3 * bound / math.sqrt(3)


def test_head_init_cfg_still_overrides():
    m = t2t_dvt(head_init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.25))
    assert torch.all(m.exits[0].head.fc.weight == 0.5)


def _groups(cfg_name, model):
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dvt', cfg_name))
    ow = dict(cfg.optim_wrapper)
    ow['type'] = 'OptimWrapper'  # AmpOptimWrapper needs a GPU; the groups are the same
    wrapper = build_optim_wrapper(model, ow)
    decay = {}
    for g in wrapper.optimizer.param_groups:
        for p in g['params']:
            decay[id(p)] = g['weight_decay']
    return cfg, wrapper, decay


@pytest.mark.parametrize('cfg_name,host', [('dvt_t2t-vit-12_8xb128_in1k.py', 't2t'),
                                           ('dvt_t2t-vit-14_8xb64_in1k.py', 't2t'),
                                           ('dvt_deit-s_8xb128_in1k.py', 'vit'),
                                           ('dvt-resize_deit-s_8xb128_in1k.py', 'vit')])
def test_official_optimizer_groups_and_no_clipping(cfg_name, host):
    """The public rule (timm add_weight_decay with an empty skip list): no decay exactly for
    parameters with one dimension or a name ending in '.bias'; so the class tokens (and the DeiT
    position tables) are decayed. No gradient clipping."""
    if host == 't2t':
        model = t2t_dvt(feature_reuse=True, relation_reuse=True)
    else:
        torch.manual_seed(0)
        model = DVTClassifier(arch=ARCH, exits=[2, 4], patch_size=16, num_classes=10,
                              thresholds=[1.0], backbone_cfg=dict(qkv_bias=True))
    cfg, wrapper, decay = _groups(cfg_name, model)
    wd = cfg.optim_wrapper.optimizer.weight_decay
    assert cfg.optim_wrapper.get('clip_grad') is None and not wrapper.clip_grad_kwargs
    names = dict(model.named_parameters())
    for name, p in names.items():
        want = 0.0 if p.dim() == 1 or name.endswith('.bias') else wd
        assert decay[id(p)] == pytest.approx(want), name
    assert decay[id(names['exits.0.backbone.cls_token'])] == pytest.approx(wd)
    if host == 'vit':
        assert decay[id(names['exits.1.backbone.pos_embed'])] == pytest.approx(wd)


@pytest.mark.parametrize('cfg_name', ['t2t-vit-12_8xb128_in1k.py', 't2t-vit-14_8xb64_in1k.py'])
def test_static_t2t_recipes_do_not_clip(cfg_name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dvt', cfg_name))
    assert cfg.optim_wrapper.get('clip_grad') is None
    # the public T2T_ViT.no_weight_decay() = {'cls_token'}
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['.cls_token'] == dict(decay_mult=0.0)
