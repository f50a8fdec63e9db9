"""One decision-override interface for every method: ``override_decisions`` (a ``with`` block
that restores what was in force before, also on an error), ``set_decision_override`` and the
one evenly spaced selection rule of the core."""
import pytest
import torch
import torch.nn as nn

from mmdyn.models.backbones import DGEPVT, DiT, DoViT, MSViT, PVT
from mmdyn.models.classifiers import DVTClassifier
from mmdyn.models.utils.dynamic import evenly_spaced, override_decisions

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 2, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_DIT = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 1, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2)

#: a model of each method, a first override (kept while a second is in force) and a second
METHODS = {
    'dge': (lambda **kw: DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0., **kw),
            dict(choice=0), dict(fractions=(0.45, 0.1, 0.45))),
    'dit': (lambda **kw: DiT(arch=dict(TINY_DIT), drop_path_rate=0., **kw),
            dict(keep_ratio=1.0, columns='all'), dict(keep_ratio=0.25, columns='pvt')),
    'dovit': (lambda **kw: DoViT(arch=TINY_VIT, num_classes=5, decision_layers=(1, 2),
                                 img_size=64, aux_head='conv1x1', **kw),
              dict(keep_ratios=(0.75, 0.5)), dict(keep_ratios=0.25)),
    'msvit': (lambda **kw: MSViT(arch=TINY_VIT, img_size=64, gate_cfg=dict(hidden_dims=16),
                                 **kw),
              dict(fine_ratio=1.0), dict(fine_ratio=0.25)),
}


class Wrapper(nn.Module):
    """A model around the backbone, as a classifier or segmentor holds it."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return [o.clone() for o in out], model.backbone.last_flops.clone()


def test_evenly_spaced_rule():
    """Position i is selected when floor((i + 1) r) > floor(i r): floor(n r) positions."""
    assert evenly_spaced(10, 0.5).nonzero().flatten().tolist() == [1, 3, 5, 7, 9]
    assert evenly_spaced(7, 0.4).nonzero().flatten().tolist() == [2, 4]
    assert evenly_spaced(7, 2 / 7).nonzero().flatten().tolist() == [3, 6]
    assert evenly_spaced(6, 1 / 3).nonzero().flatten().tolist() == [2, 5]
    assert evenly_spaced(5, 1.0).all() and not evenly_spaced(5, 0.0).any()
    assert int(evenly_spaced(49, 0.5).sum()) == 24
    assert evenly_spaced(4, 0.5).dtype == torch.bool
    # a ratio k / n selects exactly k of n, whatever the rounding of k / n
    for n in range(1, 40):
        for k in range(n + 1):
            assert int(evenly_spaced(n, k / n).sum()) == k


@pytest.mark.parametrize('name', sorted(METHODS))
def test_context_restores_what_was_in_force(name, one_thread):
    """Inside the block: the outputs and FLOPs of a model built with that override; after it
    (also after an error in it): the outputs of a forward before entering, and the previous
    override (a constructor's) back in force."""
    build, first, second = METHODS[name]
    torch.manual_seed(0)
    learned = Wrapper(build()).eval()
    for p in learned.parameters():   # gates far from their initial "everything on"
        nn.init.normal_(p, std=0.3)
    forced = Wrapper(build(decision_override=second)).eval()
    forced.load_state_dict(learned.state_dict())
    x = torch.randn(2, 3, 64, 64)
    before, f_before = _outputs(learned, x)
    ref, f_ref = _outputs(forced, x)
    with override_decisions(learned, **second) as m:
        assert m is learned
        out, f_out = _outputs(learned, x)
    assert torch.equal(f_out, f_ref) and not torch.equal(f_before, f_ref)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert learned.backbone.decision_override is None
    after, f_after = _outputs(learned, x)
    assert torch.equal(f_after, f_before)
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    # a constructor's override is what comes back, also when the block raises
    other = Wrapper(build(decision_override=first)).eval()
    other.load_state_dict(learned.state_dict())
    kept = dict(other.backbone.decision_override)
    base, f_base = _outputs(other, x)
    with pytest.raises(RuntimeError, match='inside'):
        with override_decisions(other, **second):
            raise RuntimeError('inside')
    assert other.backbone.decision_override.keys() == kept.keys()
    again, f_again = _outputs(other, x)
    assert torch.equal(f_again, f_base)
    assert all(torch.equal(a, b) for a, b in zip(again, base))


@pytest.mark.parametrize('name', sorted(METHODS))
def test_unknown_keys_are_refused(name):
    build, first, _ = METHODS[name]
    m = build()
    with pytest.raises(ValueError, match=r'takes the keys \['):
        m.set_decision_override(dict(ratio=0.5))
    with pytest.raises(ValueError, match=r'takes the keys \['):
        m.set_decision_override({})
    with pytest.raises(ValueError, match='takes the keys'):
        with override_decisions(m, ratio=0.5):
            pass
    assert m.decision_override is None
    m.set_decision_override(first)
    m.set_decision_override(None)
    assert m.decision_override is None


@pytest.mark.parametrize('name', sorted(METHODS))
def test_assigning_the_attribute_applies_the_override(name):
    """``m.decision_override = spec`` is ``m.set_decision_override(spec)``: the outputs and
    FLOPs of the override, validated keys, ``None`` gives the decisions back."""
    build, _, second = METHODS[name]
    torch.manual_seed(0)
    m = Wrapper(build()).eval()
    x = torch.randn(2, 3, 64, 64)
    own = _outputs(m, x)
    m.backbone.set_decision_override(second)
    ref, stored = _outputs(m, x), m.backbone.decision_override
    m.backbone.set_decision_override(None)
    m.backbone.decision_override = second
    assert m.backbone.decision_override == stored is not None
    out = _outputs(m, x)
    assert torch.equal(out[1], ref[1]) and not torch.equal(out[1], own[1])
    assert all(torch.equal(a, b) for a, b in zip(out[0], ref[0]))
    with pytest.raises(ValueError, match=r'takes the keys \['):
        m.backbone.decision_override = dict(ratio=0.5)
    m.backbone.decision_override = None
    assert m.backbone.decision_override is None
    assert all(torch.equal(a, b) for a, b in zip(_outputs(m, x)[0], own[0]))


def test_models_without_an_override():
    """A static model (also DGE's host with ``dge=False``) and DVT (its exits are set by
    thresholds) take no override."""
    for m in (PVT(arch=dict(TINY_PVT)), DGEPVT(arch=dict(TINY_PVT), dge=False),
              DVTClassifier(arch=dict(TINY_VIT, depth=2), exits=(2, 4), patch_size=8,
                            num_classes=5)):
        with pytest.raises(ValueError, match='no dynamic module that takes a decision'):
            with override_decisions(m, keep_ratio=0.5):
                pass


@pytest.mark.parametrize('backbone,old,new', [
    (dict(type='mmdyn.DGEPVT', arch=TINY_PVT), dict(forced_fractions=[1, 0, 0]), 'fractions'),
    (dict(type='mmdyn.DiT', arch=TINY_DIT), dict(forced_keep_ratio=0.5), 'keep_ratio'),
    (dict(type='mmdyn.DiT', arch=TINY_DIT), dict(forced_columns='pvt'), 'columns'),
    (dict(type='mmdyn.DoViT', arch=TINY_VIT), dict(forced_keep_ratios=[0.5]), 'keep_ratios'),
    (dict(type='mmdyn.MSViT', arch=TINY_VIT), dict(force_fine=0.5), 'fine_ratio')])
def test_old_arguments_in_a_config_are_one_line(backbone, old, new):
    """A config that still uses a removed forcing argument fails in one line that names the
    backbone's key path and the new spelling (what train.py / test.py print)."""
    from mmengine.config import Config

    from mmdyn.utils.cli import ToolError, build_model
    cfg = Config(dict(default_scope='mmpretrain',
                      model=dict(type='ImageClassifier', backbone=dict(backbone, **old))))
    with pytest.raises(ToolError) as e:
        build_model(cfg)
    (name, ), cls = old, backbone['type'].split('.')[-1]
    assert str(e.value) == (
        f'the model cannot be built: model.backbone: {cls}: {name}= was removed; use '
        f'decision_override=dict({new}=...) or '
        f'mmdyn.models.utils.override_decisions(model, {new}=...)')
