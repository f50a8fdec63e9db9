"""DGE (dynamic grained encoder): the encoder, the PVT / DeiT hosts, budget, FLOPs, loading."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.backbones import PVT, ViT
from mmdyn.models.backbones.dge import (DGEDPVT, DGEPVT, DGEViT, DynamicGrainedEncoder,
                                       gather_candidates)
from mmdyn.models.layers.transformer_blocks import PVTBlock, ViTBlock
from mmdyn.models.utils.dynamic import override_decisions
from mmdyn.registry import MODELS

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 2, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=3, num_heads=2, mlp_ratio=2)


def randomize_gates(model, seed=0, std=1.0):
    """Gates with random weights and no bias: the argmax varies over regions and images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.dge_layers():
            w = m.gate.proj.weight
            w.copy_(torch.randn(w.shape, generator=g) * std)
            m.gate.proj.bias.zero_()
    return model


def random_choice(seed=0):
    """A forced choice mixing every granularity: region ``r`` gets ``(r + seed) mod K``."""

    def fn(logits):
        n = logits[..., 0].numel()
        return ((torch.arange(n) + seed) % logits.shape[-1]).reshape(logits.shape[:-1])

    return fn


def pvt_pair(**kw):
    torch.manual_seed(0)
    dyn = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0., **kw)
    dyn.init_weights()
    static = PVT(arch=dict(TINY_PVT), drop_path_rate=0.)
    missing, unexpected = static.load_state_dict(dyn.state_dict(), strict=False)
    assert not missing and all('.gate.' in k for k in unexpected)
    return dyn.eval(), static.eval()


def vit_pair(**kw):
    torch.manual_seed(0)
    dyn = DGEViT(arch=dict(TINY_VIT), img_size=64, **kw)
    dyn.init_weights()
    static = ViT(arch=dict(TINY_VIT), img_size=64)
    missing, unexpected = static.load_state_dict(dyn.state_dict(), strict=False)
    assert not missing and all('.gate.' in k for k in unexpected)
    return dyn.eval(), static.eval()


# ----------------------------------------------------------------------------- static equality
@pytest.mark.parametrize('shape', [(64, 64), (100, 76)])
def test_pvt_granularity_one_equals_static(shape):
    dyn, static = pvt_pair()
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        ref = static(x)
        with override_decisions(dyn, choice=('phi', 1)):  # every region at phi = 1, via DGE
            out = dyn(x)
        assert dyn.decision_override is None
        assert all(m.forced_choice is None for m in dyn.dge_layers())
        dyn.force_full = True
        full = dyn(x)
        dyn.force_full = False
    for r, o, f in zip(ref, out, full):
        assert o.shape == r.shape
        assert (o - r).abs().max() <= 1e-5
        assert torch.equal(f, r)
    assert torch.allclose(dyn.last_stats['kept_ratio'], torch.ones(2, dtype=torch.float32))
    assert torch.equal(dyn.last_flops, torch.full((2, ), float(static.static_flops(shape)),
                                                  dtype=torch.float64))


def test_vit_granularity_one_equals_static():
    dyn, static = vit_pair()
    x = torch.randn(2, 3, 80, 64)  # 5 x 4 tokens: the region grid is padded at the bottom
    with torch.no_grad():
        ref = static(x)[0]
        dyn.set_decision_override(dict(choice=0))
        out = dyn(x)[0]
    assert out.shape == ref.shape == (2, 32, 5, 4)
    assert (out - ref).abs().max() <= 1e-5


def test_dge_off_is_static():
    dyn = DGEPVT(arch=dict(TINY_PVT), dge=False, drop_path_rate=0.)
    static = PVT(arch=dict(TINY_PVT), drop_path_rate=0.)
    assert set(dyn.state_dict()) == set(static.state_dict())
    static.load_state_dict(dyn.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(dyn.eval()(x), static.eval()(x)))
    assert dyn.expected_cost is None and dyn.dge_layers() == []


# ----------------------------------------------------------------------------- encoder semantics
def test_encoder_pools_queries_and_unpools_updates():
    """A 6x10 map, S=4 (padded to 8x12), every region at granularity 2: each 2x2 patch gets the
    block's update of its average, broadcast over its tokens."""
    torch.manual_seed(0)
    blk = PVTBlock(8, 2, mlp_ratio=2, sr_ratio=2, use_conv_ffn=False).eval()
    enc = DynamicGrainedEncoder(8, (1, 2, 4)).eval()
    enc.forced_choice = 1
    hw = (6, 10)
    x = torch.randn(2, 60, 8)
    with torch.no_grad():
        out, info = enc(blk, x, hw)
        q = F.avg_pool2d(x.transpose(1, 2).reshape(2, 8, 6, 10), 2).flatten(2).transpose(1, 2)
        delta = blk(x, hw, query=q) - q
        ref = x + delta.reshape(2, 3, 5, 8).repeat_interleave(2, 1).repeat_interleave(
            2, 2).reshape(2, 60, 8)
    assert (out - ref).abs().max() <= 1e-5
    assert info['grid'] == (2, 3)
    assert info['num_queries'].tolist() == [15., 15.]
    # query counts of border regions: 4x4 real tokens -> 4, 2x2 -> 1 (rows 4..5, cols 8..9)
    counts = enc.query_counts(hw)
    assert counts[..., 1].tolist() == [[4, 4, 2], [2, 2, 1]]
    assert counts[..., 0].sum() == 60 and counts[..., 2].sum() == 6


def test_skip_granularity_zero_passes_tokens_through():
    torch.manual_seed(0)
    blk = ViTBlock(8, 2, mlp_ratio=2).eval()
    enc = DynamicGrainedEncoder(8, (0, 1)).eval()
    assert enc.granularities == (1, 0) and enc.region_size == 1
    enc.forced_choice = 1  # phi = 0 everywhere
    x = torch.randn(1, 1 + 12, 8)
    with torch.no_grad():
        out, info = enc(blk, x, (3, 4), num_extra=1)
        ref_cls = blk(x, (3, 4), query=x[:, :1])
    assert torch.equal(out[:, 1:], x[:, 1:])  # no query: the patch tokens are unchanged
    assert (out[:, :1] - ref_cls).abs().max() <= 1e-6  # the cls token still runs
    assert info['num_queries'].tolist() == [1.]


@pytest.mark.parametrize('grad', [False, True])
def test_no_query_anywhere_with_reference_points(grad):
    """Every region choosing no query (phi = 0) on the image path, with the deformable block
    (it reads each query's reference point): no query runs and the tokens pass unchanged."""
    from mmdyn.models.backbones.dge import DPVTBlock
    torch.manual_seed(0)
    blk = DPVTBlock(8, 2, mlp_ratio=2).eval()
    enc = DynamicGrainedEncoder(8, (1, 0, 2, 4)).eval()
    enc.forced_choice = enc.granularities.index(0)  # phi = 0 everywhere
    x = torch.randn(1, 8 * 8, 8)
    with torch.set_grad_enabled(grad):
        out, info = enc(blk, x, (8, 8))
    assert torch.equal(out, x)
    assert info['num_queries'].tolist() == [0.] and info['ran_queries'].tolist() == [0.]


def test_layer_wise_routing():
    dyn, static = pvt_pair(layer_wise=True)
    dyn = randomize_gates(dyn)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        dyn(x)
        for name, m in dyn.last_maps.items():
            assert m.shape == (2, 1, 1)  # one decision per layer and image
        dyn.set_decision_override(dict(choice=0))
        out = dyn(x)
        ref = static(x)
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(out, ref))


def test_eval_routing_is_the_gates_rule():
    """At eval the encoder's routing is the gate's own rule (one-hot argmax of the logits,
    ``soft = softmax``), computed once; a forced choice replaces the decisions, not ``soft``."""
    torch.manual_seed(0)
    enc = DynamicGrainedEncoder(8, (1, 2, 4), region_size=4).eval()
    with torch.no_grad():
        enc.gate.proj.weight.normal_(0, 3.0)
        t = torch.randn(2, 8 * 12, 8)
        pooled = F.avg_pool2d(t.transpose(1, 2).reshape(2, 8, 8, 12), 4).permute(0, 2, 3, 1)
        want = enc.gate(pooled)
        decision, choice, soft = enc.route(t, (8, 12))
        assert len(set(choice.flatten().tolist())) > 1  # the regions differ
        assert torch.equal(decision, want.decision)
        assert torch.equal(choice, want.logits.argmax(-1))
        torch.testing.assert_close(soft, want.soft, atol=1e-6, rtol=0)
        enc.forced_choice = random_choice(1)
        decision, choice, soft = enc.route(t, (8, 12))
        assert torch.equal(choice, random_choice(1)(want.logits))
        assert torch.equal(decision, F.one_hot(choice, 3).float())
        torch.testing.assert_close(soft, want.soft, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- modes agree
@pytest.mark.parametrize('path', ['dense', 'sparse'])
@pytest.mark.parametrize('host', ['pvt', 'vit'])
def test_train_and_eval_agree_with_fixed_gate(path, host):
    dyn, _ = pvt_pair(train_path=path) if host == 'pvt' else vit_pair(train_path=path)
    dyn.set_decision_override(dict(choice=random_choice(3)))
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ev = dyn.eval()(x)
        ev_flops = dyn.last_flops.clone()
        tr = dyn.train()(x)
        tr_flops = dyn.last_flops.clone()
    assert 0.3 < float(dyn.last_stats['kept_ratio'].mean()) < 0.9  # really mixed
    for a, b in zip(ev, tr):
        assert (a - b).abs().max() <= 1e-5
    # training records the cost of the chosen queries (what eval runs)
    assert torch.equal(ev_flops, tr_flops)


@pytest.mark.parametrize('host', ['pvt', 'vit'])
def test_image_alone_equals_image_in_batch(host):
    """One image at eval gathers its kept queries part by part (ViT: the class token, the fine
    tokens, each pooled map, a skipped granularity between them); the batch runs a padded
    token set of the concatenated candidates: the same tokens and records."""
    if host == 'pvt':
        dyn, x, seed, expected = pvt_pair()[0], torch.randn(3, 3, 96, 64), 0, {1, 2, 4}
    else:
        dyn, x, seed, expected = (vit_pair(granularities=(1, 0, 2, 4))[0],
                                  torch.randn(3, 3, 64, 64), 3, {0, 1, 2, 4})
    dyn = randomize_gates(dyn, seed=seed)
    with torch.no_grad():
        batch = dyn(x)
        bflops = dyn.last_flops.clone()
        maps = {k: v.clone() for k, v in dyn.last_maps.items()}
        for i in range(3):
            alone = dyn(x[i:i + 1])
            for a, b in zip(alone, batch):
                assert (a[0] - b[i]).abs().max() <= 1e-5
            assert dyn.last_flops[0] == bflops[i]
            for k in maps:
                assert torch.equal(dyn.last_maps[k][0], maps[k][i])
    # every granularity was chosen somewhere, and the images cost different amounts
    assert set(torch.cat([m.flatten() for m in maps.values()]).tolist()) == expected
    assert len(set(bflops.tolist())) > 1


@pytest.mark.parametrize('host', ['pvt', 'pvt-no-middle', 'vit', 'dpvt'])
def test_image_on_grids_equals_owner_table_path(host, monkeypatch):
    """One image at eval on the CPU, the map in whole patches: the broadcast un-pooling of
    ``_update_on_grids`` (a fine token takes its query's output) gives the tokens, records and
    input gradients of the per-token owner table it replaces, and a map that is not in whole
    patches (PVT's 6 x 4 stage at 96 x 64) takes the owner path. ``pvt-no-middle``: no region
    chooses granularity 2, so the 4 x 4 updates are broadcast to the tokens directly."""
    choice = random_choice(1)
    if host.startswith('pvt'):
        dyn, x, grans = pvt_pair()[0], torch.randn(1, 3, 96, 64), {1, 2, 4}
        if host == 'pvt-no-middle':
            grans = {1, 4}

            def choice(logits):  # noqa: F811
                return random_choice(1)(logits) // 2 * 2  # 0 or 2 (phi 1 or 4)
    elif host == 'vit':  # a class token and a skipped granularity between the others
        dyn, x, grans = vit_pair(granularities=(1, 0, 2, 4))[0], \
            torch.randn(1, 3, 128, 128), {0, 1, 2, 4}
    else:  # the deformable attention reads each query's reference point
        dyn, x, grans = _dpvt_pair()[0], torch.randn(1, 3, 96, 64), {1, 2, 4}
    dyn.set_decision_override(dict(choice=choice))
    taken = []
    on_grids = DynamicGrainedEncoder._update_on_grids

    def spy(self, block, x, hw, *args):
        taken.append(tuple(hw))
        return on_grids(self, block, x, hw, *args)

    monkeypatch.setattr(DynamicGrainedEncoder, '_update_on_grids', spy)

    def run(grad):
        xi = x.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            outs = dyn(xi)
            if grad:
                sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
                    for o in outs).backward()
        return ([o.detach() for o in outs], xi.grad, dyn.last_flops.clone(),
                {k: v.clone() for k, v in dyn.last_stats.items()},
                {k: v.clone() for k, v in dyn.last_maps.items()})

    results = {}
    for grad in (False, True):
        taken.clear()
        results['grids', grad] = run(grad)
        assert set(taken) == ({(24, 16), (12, 8)} if host != 'vit' else {(8, 8)})
        with monkeypatch.context() as m:
            m.setattr(DynamicGrainedEncoder, '_whole_patches', lambda self, hw: False)
            taken.clear()
            results['owner', grad] = run(grad)
            assert not taken
    for grad in (False, True):
        outs, gx, flops, stats, maps = results['grids', grad]
        r_outs, r_gx, r_flops, r_stats, r_maps = results['owner', grad]
        for a, b in zip(outs, r_outs):
            assert (a - b).abs().max() <= 1e-5
        if grad:
            assert (gx - r_gx).abs().max() <= 1e-5 and gx.abs().max() > 0
        assert torch.equal(flops, r_flops)
        for k in r_stats:
            torch.testing.assert_close(stats[k], r_stats[k], rtol=1e-6, atol=0)
        assert all(torch.equal(maps[k], r_maps[k]) for k in r_maps)
    assert set(torch.cat([m.flatten() for m in maps.values()]).tolist()) == grans
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(results['grids', True][0],
                                                            results['grids', False][0]))


def test_layer_costs_cached_per_size_bounded_and_rebuilt(monkeypatch):
    """The per-layer cost numbers are cached per map size; the records equal those of a model
    with nothing cached, the cache stays within its bound, and a model without the cache (one
    pickled before it existed) builds it again."""
    import copy

    import mmdyn.models.backbones.dge as dge_module
    monkeypatch.setattr(dge_module, 'LAYER_COST_ENTRIES', 7)
    dyn = randomize_gates(pvt_pair()[0])
    with torch.no_grad():
        for hw in [(64, 64), (96, 64), (64, 96), (64, 64)]:
            x = torch.randn(1, 3, *hw)
            fresh = copy.deepcopy(dyn)
            fresh._layer_cost_cache.clear()
            dyn(x)
            fresh(x)
            assert torch.equal(dyn.last_flops, fresh.last_flops)
            for k, v in fresh.last_stats.items():
                assert torch.equal(dyn.last_stats[k], v)
            assert 0 < len(dyn._layer_cost_cache) <= 7  # 5 layers a size
        del dyn.__dict__['_layer_cost_cache']
        dyn(x)
        assert torch.equal(dyn.last_flops, fresh.last_flops)


def test_gather_candidates_reads_the_parts_as_their_concatenation():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(1, n, 4, generator=g) for n in (0, 7, 3, 0, 5)]
    whole = torch.cat(parts, 1)
    for kept in ([], [8], list(range(15)), [0, 6, 7, 9, 10, 14], [10, 11, 12, 13, 14]):
        kept = torch.tensor(kept, dtype=torch.long)
        ref = whole.index_select(1, kept)
        assert torch.equal(gather_candidates(parts, kept), ref)
        assert torch.equal(gather_candidates(whole, kept), ref)
        with torch.no_grad():  # written into one tensor, no concatenation
            assert torch.equal(gather_candidates(parts, kept), ref)
    # per image (a token set's index, any order, every part's positions and its edges)
    parts = [torch.randn(3, n, 4, generator=g) for n in (0, 7, 3, 0, 5)]
    whole = torch.cat(parts, 1)
    index = torch.stack([torch.randperm(15, generator=g)[:9] for _ in range(3)])
    index[0, :4] = torch.tensor([0, 6, 7, 14])
    ref = torch.stack([whole[i, index[i]] for i in range(3)])
    assert torch.equal(gather_candidates(parts, index), ref)
    assert torch.equal(gather_candidates(whole, index), ref)
    # every slot in one part (the others never read)
    only_pooled = torch.tensor([[7, 9, 8], [9, 7, 8], [8, 8, 7]])
    assert torch.equal(gather_candidates(parts, only_pooled),
                       torch.stack([whole[i, only_pooled[i]] for i in range(3)]))


def test_dense_training_gradients_reach_gate_and_budget():
    dyn, _ = pvt_pair()
    dyn.train()
    x = torch.randn(2, 3, 64, 64)
    out = dyn(x)
    assert set(dyn.aux_losses) == {'loss_budget'}
    beta = dyn.expected_cost
    assert beta.shape == (2, ) and beta.requires_grad
    assert torch.allclose(dyn.aux_losses['loss_budget'],
                          (beta.float().mean() - 0.5) ** 2)
    task = sum(o.pow(2).mean() for o in out)
    g_task = torch.autograd.grad(task, dyn.dge[1][0].gate.proj.weight, retain_graph=True)[0]
    g_budget = torch.autograd.grad(dyn.aux_losses['loss_budget'],
                                   dyn.dge[1][0].gate.proj.weight)[0]
    assert g_task.abs().sum() > 0 and g_budget.abs().sum() > 0
    dyn.eval()
    with torch.no_grad():
        dyn(x)
    assert dyn.aux_losses == {}


# ----------------------------------------------------------------------------- budget and FLOPs
def test_beta_matches_eq7():
    """DeiT: every layer costs the same per query, so beta (Eq. 7) is the query ratio."""
    dyn, _ = vit_pair(budget=0.25, budget_convention='paper')
    x = torch.randn(2, 3, 64, 64)  # 4 x 4 tokens + cls, one 4x4 region
    dyn.train()
    dyn.set_decision_override(dict(choice=('phi', 4)))
    dyn(x)
    assert torch.allclose(dyn.expected_cost, torch.full((2, ), 2 / 17, dtype=torch.float64))
    assert dyn.aux_losses['loss_budget'].item() == pytest.approx((2 / 17 - 0.25) ** 2, rel=1e-5)
    dyn.set_decision_override(dict(choice=('phi', 2)))
    dyn(x)
    assert torch.allclose(dyn.expected_cost, torch.full((2, ), 5 / 17, dtype=torch.float64))


def test_realised_flops_independent_count():
    dyn, static = pvt_pair()
    dyn = randomize_gates(dyn, seed=1)
    shape = (96, 64)
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        dyn(x)
    flops = dyn.last_flops
    # independent count from the decision maps: queries per region from the real extent
    expected = torch.zeros(2, dtype=torch.float64)
    hw = shape
    for i, st in enumerate(dyn.stages):
        expected += st.patch_embed.flops(hw)
        hw = st.patch_embed.out_shape(hw)
        for j, blk in enumerate(st.blocks):
            phi = dyn.last_maps[f'stage{i}.block{j}']  # [B, gh, gw]
            nq = torch.zeros(2, dtype=torch.float64)
            for r in range(phi.shape[1]):
                for c in range(phi.shape[2]):
                    rows, cols = min(4, hw[0] - 4 * r), min(4, hw[1] - 4 * c)
                    for b in range(2):
                        p = int(phi[b, r, c])
                        nq[b] += math.ceil(rows / p) * math.ceil(cols / p)
            gates = phi.shape[1] * phi.shape[2] * blk.embed_dims * 3
            expected += torch.tensor([float(blk.flops(int(n), hw)) for n in nq]) + gates
    assert torch.equal(flops, expected)
    assert (flops < static.static_flops(shape)).all()
    # coarser choices cost less, and the ratio is recorded
    with torch.no_grad():
        costs = []
        for k in range(3):
            dyn.set_decision_override(dict(choice=k))
            dyn(x)
            costs.append(float(dyn.last_flops[0]))
    assert costs[0] > costs[1] > costs[2]
    assert dyn.last_stats['flops_ratio'][0].item() == pytest.approx(
        costs[2] / static.static_flops(shape), rel=1e-6)


def test_pvt_small_dge_adds_12k_params():
    """Table 1: PVT-S + DGE adds about 8.1K / 12.1K / 16.1K parameters for |Phi| = 2 / 3 / 4.
    Ours: one linear C -> K per block, sum_l (C_l + 1) K = 4176 K (8.4K / 12.5K / 16.7K)."""
    with torch.device('meta'):
        base = sum(p.numel() for p in DGEPVT('small', dge=False).parameters())
        for phi, paper in (((0, 1), 8.1e3), ((1, 2), 8.1e3), ((1, 2, 4), 12.1e3),
                           ((1, 2, 4, 8), 16.1e3)):
            extra = sum(p.numel() for p in DGEPVT('small', granularities=phi).parameters()) - base
            assert extra == 4176 * len(phi)
            assert abs(extra - paper) / paper < 0.04
        assert base == sum(p.numel() for p in PVT('small').parameters())


# ----------------------------------------------------------------------------- build and errors
def test_registry_and_archs():
    for arch in ('tiny', 'small', 'medium', 'large'):
        with torch.device('meta'):
            m = MODELS.build(dict(type='mmdyn.DGEPVT', arch=arch))
        assert len(m.dge_layers()) == sum(m.depths)
    for arch, c in (('deit-t', 192), ('deit-s', 384), ('deit-b', 768)):
        with torch.device('meta'):
            m = MODELS.build(dict(type='mmdyn.DGEViT', arch=arch))
        assert m.embed_dims == c and len(m.dge_layers()) == 12
        assert m.dge[0].gate.proj.weight.shape == (3, c)


@pytest.mark.parametrize('kw,msg', [
    (dict(granularities=(1, 3, 4)), 'do not divide'),
    (dict(granularities=(1, 2), region_size=3), 'do not divide'),
    (dict(granularities=()), 'must not be empty'),
    (dict(granularities=(1, )), 'at least two'),
    (dict(granularities=(1, 1, 2)), 'distinct'),
    (dict(budget=-0.1), r'\[0, 1\]'),
    (dict(budget=1.5), r'\[0, 1\]'),
    (dict(train_path='fast'), 'train_path'),
    (dict(layer_wise=True, region_size=4), 'not both'),
])
def test_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DGEPVT(arch=dict(TINY_PVT), **kw)
    with pytest.raises(ValueError, match=msg):
        MODELS.build(dict(type='mmdyn.DGEViT', arch=dict(TINY_VIT), **kw))


# ----------------------------------------------------------------------------- checkpoints
def _pvt_to_official_v1(sd):
    """mmdyn PVT v1 keys -> whai362 PVT v1 keys (test-side inverse, with a stage-4 cls slot)."""
    out = {}
    for k, v in sd.items():
        if '.gate.' in k:
            continue
        parts = k.split('.')
        s = int(parts[1]) + 1
        if parts[2] == 'patch_embed':
            out[f'patch_embed{s}.' + ('proj' if parts[3] == 'projection' else 'norm') + '.' +
                parts[4]] = v
        elif parts[2] == 'pos_embed':
            out[f'pos_embed{s}'] = torch.cat([torch.randn(1, 1, v.shape[-1]), v], 1) \
                if s == 4 else v
        else:
            out[f'block{s}.{parts[3]}.' + '.'.join(parts[4:]).replace('ffn.', 'mlp.')] = v
    out['cls_token'] = torch.randn(1, 1, 32)
    out['head.weight'] = torch.randn(10, 32)
    return out


def _vit_to_timm(sd):
    out = {}
    for k, v in sd.items():
        if '.gate.' in k:
            continue
        k2 = k.replace('patch_embed.projection', 'patch_embed.proj').replace('.ffn.', '.mlp.')
        if '.attn.q.' in k:
            kv = sd[k.replace('.attn.q.', '.attn.kv.')]
            out[k2.replace('.attn.q.', '.attn.qkv.')] = torch.cat([v, kv], 0)
        elif '.attn.kv.' in k:
            continue
        else:
            out[k2] = v
    return out


def test_loads_official_pvt_v1_checkpoint(tmp_path):
    _, static = pvt_pair()
    with torch.no_grad():
        for p in static.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    f = tmp_path / 'pvt_small.pth'
    torch.save(_pvt_to_official_v1(static.state_dict()), f)
    dyn = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.,
                 init_cfg=dict(type='Pretrained', checkpoint=str(f)))
    dyn.init_weights()
    gate = dyn.dge[0][0].gate.proj
    assert gate.bias[0] > gate.bias[1]  # the gate kept its own init (finest first)
    x = torch.randn(1, 3, 64, 64)
    dyn.eval().set_decision_override(dict(choice=0))
    with torch.no_grad():
        assert all((a - b).abs().max() <= 1e-5 for a, b in zip(dyn(x), static(x)))


def test_loads_deit_checkpoint(tmp_path):
    _, static = vit_pair()
    with torch.no_grad():
        for p in static.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    f = tmp_path / 'deit.pth'
    torch.save({'model': _vit_to_timm(static.state_dict())}, f)
    dyn = DGEViT(arch=dict(TINY_VIT), img_size=64,
                 init_cfg=dict(type='Pretrained', checkpoint=str(f)))
    dyn.init_weights()
    x = torch.randn(1, 3, 64, 64)
    dyn.eval().set_decision_override(dict(choice=0))
    with torch.no_grad():
        assert (dyn(x)[0] - static(x)[0]).abs().max() <= 1e-5


def test_dge_classifier_backbone_loads_into_dense_model(tmp_path):
    """A trained DGE classifier's checkpoint (keys under ``backbone.``) loads through init_cfg
    with ``prefix='backbone.'``, gates included."""
    src, _ = pvt_pair()
    src = randomize_gates(src, seed=5)
    f = tmp_path / 'cls.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, f)
    dst = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.,
                 init_cfg=dict(type='Pretrained', checkpoint=str(f), prefix='backbone.'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_forced_fractions_for_benchmarks():
    """The override's ``fractions`` fix the gates (benchmark of a forced budget)
    reproducibly."""
    torch.manual_seed(0)
    m = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.,
               decision_override=dict(fractions=(0.45, 0.1, 0.45))).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        m(x)
        first = {k: v.clone() for k, v in m.last_maps.items()}
        m(torch.randn(1, 3, 128, 128))
    assert all(torch.equal(first[k], m.last_maps[k]) for k in first)  # input-independent
    # exact values from the forced decisions: a region of S x S = 4 x 4 patches at granularity
    # g holds (4 / g)^2 queries (every grid here is a whole number of regions, equal areas)
    hws = {0: (32, 32), 1: (16, 16), 2: (8, 8), 3: (4, 4)}
    psi, full, fine, cq = {}, {}, {}, {}
    for i, st in enumerate(m.stages):
        for j, blk in enumerate(st.blocks):
            key, hw = f'stage{i}.block{j}', hws[i]
            g = m.last_maps[key][0].double()
            assert g.shape == (hw[0] // 4, hw[1] // 4)
            psi[key] = float(((4 / g) ** 2).sum())
            full[key] = float(hw[0] * hw[1])
            fine[key] = float((g == 1).double().mean())
            cq[key] = float(blk.flops(1, hw) - blk.flops(0, hw))  # MACs of one query
    assert len(psi) == 5
    torch.testing.assert_close(float(m.last_stats['fine_ratio']), sum(fine.values()) / 5,
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(float(m.last_stats['kept_ratio']),
                               sum(psi.values()) / sum(full.values()), rtol=1e-6, atol=0)
    assert 0.3 < float(m.last_stats['fine_ratio']) < 0.7  # the fractions are really mixed
    # the default ('authors') budget: vtpack's per-layer cost at those query counts
    num, den = [m._authors_static_cost((128, 128))] * 2
    for i, st in enumerate(m.stages):
        for j, blk in enumerate(st.blocks):
            enc, key = m.dge[i][j], f'stage{i}.block{j}'
            num += float(m._authors_layer_cost(enc, blk, hws[i], 0, psi[key]))
            den += float(m._authors_layer_cost(enc, blk, hws[i], 0, full[key]))
    torch.testing.assert_close(float(m.last_stats['budget_ratio']), num / den, rtol=1e-6,
                               atol=0)
    # Eq. 7 ('paper'): sum_l C_l psi_l / sum_l C_l N_l with C_l the host block's cost of a query
    torch.manual_seed(0)
    p = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.,
               decision_override=dict(fractions=(0.45, 0.1, 0.45)),
               budget_convention='paper').eval()
    with torch.no_grad():
        p(x)
    assert all(torch.equal(first[k], p.last_maps[k]) for k in first)
    torch.testing.assert_close(
        float(p.last_stats['budget_ratio']),
        sum(cq[k] * psi[k] for k in psi) / sum(cq[k] * full[k] for k in psi), rtol=1e-6,
        atol=0)
    with pytest.raises(ValueError, match='sum to 1'):
        DGEPVT(arch=dict(TINY_PVT), decision_override=dict(fractions=(0.5, 0.1, 0.1)))
    with pytest.raises(ValueError, match='entries'):
        DGEPVT(arch=dict(TINY_PVT), decision_override=dict(fractions=(0.5, 0.5)))
    with pytest.raises(ValueError, match='not both'):
        DGEPVT(arch=dict(TINY_PVT), decision_override=dict(fractions=(1, 0, 0), choice=0))
    for cls in (DGEPVT, DGEViT, DGEDPVT):
        with pytest.raises(ValueError, match=r'forced_fractions= was removed; use '
                                             r'decision_override=dict\(fractions='):
            cls(forced_fractions=(0.45, 0.1, 0.45))


def test_fraction_choice_draws_once_per_shape():
    """The forced pattern is drawn once per (batch, grid, device) and then reused: the same
    values as a fresh draw, other grids drawn on their own, the store bounded."""
    from mmdyn.models.backbones.dge import FractionChoice
    fc = FractionChoice((0.3, 0.2, 0.5))
    logits = torch.zeros(2, 6, 5, 3)
    first = fc(logits)
    assert fc(logits) is first
    assert torch.equal(FractionChoice((0.3, 0.2, 0.5))(logits), first)
    assert first.shape == (2, 6, 5) and set(first.unique().tolist()) == {0, 1, 2}
    other = fc(torch.zeros(2, 5, 6, 3))
    assert other.shape == (2, 5, 6) and not torch.equal(other.flatten(), first.flatten())
    for n in range(1, 80):
        fc(torch.zeros(1, n, 1, 3))
    assert len(fc._drawn) <= 64
    assert torch.equal(fc(logits), first)


def test_override_context_restores_learned_decisions():
    """``override_decisions`` gives the outputs and FLOPs of the constructor's override;
    after the block the gates decide again (outputs equal to a forward before entering)."""
    torch.manual_seed(0)
    m = randomize_gates(DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.)).eval()
    forced = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.,
                    decision_override=dict(fractions=(0.45, 0.1, 0.45))).eval()
    forced.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before, ref = m(x), forced(x)
        flops = m.last_flops.clone()
        with override_decisions(m, fractions=(0.45, 0.1, 0.45)):
            out = m(x)
            assert torch.equal(m.last_flops, forced.last_flops)
        after = m(x)
    assert not torch.equal(flops, forced.last_flops)
    for a, b, c, d in zip(out, ref, after, before):
        assert torch.equal(a, b) and torch.equal(c, d)
    assert torch.equal(m.last_flops, flops)


# ----------------------------------------------------------------------------- DPVT
def _dpvt_pair():
    from mmdyn.models.backbones.dge import DGEDPVT, DPVT
    torch.manual_seed(0)
    dyn = DGEDPVT(arch=dict(TINY_PVT), drop_path_rate=0.)
    dyn.init_weights()
    with torch.no_grad():  # learned-looking offsets and point weights
        for n, p in dyn.named_parameters():
            if '.attn.offsets.weight' in n or '.attn.weights.weight' in n:
                p.normal_(0, 0.3)
    static = DPVT(arch=dict(TINY_PVT), drop_path_rate=0.)
    missing, unexpected = static.load_state_dict(dyn.state_dict(), strict=False)
    assert not missing and all('.gate.' in k for k in unexpected)
    return dyn.eval(), static.eval()


def test_deformable_attention_samples_its_points():
    """One point at offset 0 samples the query's own value; offset (1, 0) its right neighbour
    (zero beyond the border)."""
    from mmdyn.models.layers.deformable_attention import DeformablePointAttention
    torch.manual_seed(0)
    att = DeformablePointAttention(8, 2, num_points=1).eval()
    x = torch.randn(1, 12, 8)
    with torch.no_grad():
        att.offsets.bias.zero_()
        out = att(x, (3, 4))
        ref = att.proj(att.v(x))
        assert (out - ref).abs().max() < 1e-5
        att.offsets.bias.copy_(torch.tensor([1., 0., 1., 0.]))
        out = att(x, (3, 4))
        v = att.v(x).reshape(1, 3, 4, 8)
        shifted = torch.cat([v[:, :, 1:], torch.zeros(1, 3, 1, 8)], 2).reshape(1, 12, 8)
        assert (out - att.proj(shifted)).abs().max() < 1e-5
    assert att.flops(12, (3, 4)) == 12 * 64 + 12 * (8 * 3 * 2 + 5 * 8 + 64)


def _zero_padded_bilinear(v, loc):
    """``v`` ``[H, W, C]``, ``loc`` ``[..., 2]`` (x, y) in token units -> ``[..., C]``: bilinear
    interpolation with zeros outside the map (the reference for the sampler)."""
    h, w, _ = v.shape
    x, y = loc[..., 0], loc[..., 1]
    out = 0
    for xi in (x.floor(), x.floor() + 1):
        for yi in (y.floor(), y.floor() + 1):
            wgt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            val = v[yi.clamp(0, h - 1).long(), xi.clamp(0, w - 1).long()]
            out = out + (wgt * inside)[..., None] * val
    return out


@pytest.mark.parametrize('hw', [(4, 5), (4, 1), (1, 4), (1, 1)])
def test_deformable_attention_equals_zero_padded_bilinear(hw):
    """Every point is read by bilinear interpolation with zeros beyond the map, also on a map
    one token wide or tall (DPVT's last stage for images 32-63 pixels wide), where
    ``grid_sample(align_corners=True)`` alone would read the one column at any offset."""
    from mmdyn.models.layers.deformable_attention import (DeformablePointAttention,
                                                          token_reference_points)
    torch.manual_seed(0)
    heads, pts, c = 2, 3, 8
    att = DeformablePointAttention(c, heads, num_points=pts).double().eval()
    with torch.no_grad():
        att.offsets.weight.normal_(0, 0.1)
        att.offsets.bias.uniform_(-1.5, 1.5)  # fractional, some points off the map
        att.weights.weight.normal_(0, 0.3)
    n = hw[0] * hw[1]
    x = torch.randn(2, n, c, dtype=torch.float64)
    with torch.no_grad():
        out = att(x, hw)
        loc = token_reference_points(hw).double()[None, :, None, None] + \
            att.offsets(x).view(2, n, heads, pts, 2)
        attn = att.weights(x).view(2, n, heads, pts).softmax(-1)
        v = att.v(x).view(2, hw[0], hw[1], heads, c // heads)
        want = torch.stack([torch.stack([
            (_zero_padded_bilinear(v[b, :, :, k], loc[b, :, k]) * attn[b, :, k, :, None]).sum(1)
            for k in range(heads)], 1).reshape(n, c) for b in range(2)])
        torch.testing.assert_close(out, att.proj(want), rtol=1e-9, atol=1e-9)
        outside = (loc[..., 0] <= -1) | (loc[..., 0] >= hw[1]) | (loc[..., 1] <= -1) | \
            (loc[..., 1] >= hw[0])
        assert outside.any() and not outside.all()


def test_deformable_attention_scales_only_the_offset_gradient():
    """The authors' DPVT multiplies the gradient of the sampling locations by 0.1 (forward
    unchanged): the offset projection's gradient is 0.1x the unscaled one, the others equal."""
    from mmdyn.models.backbones.dge import DPVT
    from mmdyn.models.layers.deformable_attention import DeformablePointAttention
    torch.manual_seed(0)
    scaled = DeformablePointAttention(8, 2, num_points=3).double()
    plain = DeformablePointAttention(8, 2, num_points=3, offset_grad_scale=1.).double()
    assert scaled.offset_grad_scale == 0.1
    with torch.no_grad():
        for p in scaled.parameters():
            p.normal_(0, 0.5)  # fractional offsets: a non-zero location gradient
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    w = torch.randn(2, 20, 8, dtype=torch.float64)
    outs = [m(x, (4, 5)) for m in (scaled, plain)]
    assert torch.equal(outs[0], outs[1])
    for m, out in zip((scaled, plain), outs):
        (out * w).sum().backward()
    g_plain = plain.offsets.weight.grad
    assert g_plain.abs().max() > 1e-3
    torch.testing.assert_close(scaled.offsets.weight.grad, 0.1 * g_plain, rtol=1e-12, atol=0)
    torch.testing.assert_close(scaled.offsets.bias.grad, 0.1 * plain.offsets.bias.grad,
                               rtol=1e-12, atol=0)
    for name in ('v', 'weights', 'proj'):
        assert torch.equal(getattr(scaled, name).weight.grad, getattr(plain, name).weight.grad)
    for scale in (0.1, 1.):  # the backbone option reaches every attention
        kw = {} if scale == 0.1 else dict(offset_grad_scale=scale)
        m = DPVT(arch=dict(TINY_PVT), **kw)
        assert {blk.attn.offset_grad_scale for st in m.stages for blk in st.blocks} == {scale}


def test_dpvt_granularity_one_equals_static_and_modes_agree():
    dyn, static = _dpvt_pair()
    x = torch.randn(2, 3, 100, 76)
    with torch.no_grad():
        dyn.set_decision_override(dict(choice=0))
        assert all((a - b).abs().max() <= 1e-5 for a, b in zip(dyn(x), static(x)))
        randomize_gates(dyn).set_decision_override(None)
        ev = dyn(x)
        flops = dyn.last_flops.clone()
        alone = dyn(x[1:])
        assert all((a[1:] - b).abs().max() <= 1e-5 for a, b in zip(ev, alone))
        assert dyn.last_flops[0] == flops[1]
        dyn.set_decision_override(dict(choice=random_choice(1)))
        ev = dyn(x)
        tr = dyn.train()(x)
        assert all((a - b).abs().max() <= 1e-5 for a, b in zip(ev, tr))
    assert (flops < static.static_flops((100, 76))).all()
    with torch.device('meta'):
        from mmdyn.models.backbones.dge import DPVT
        assert all(len(DPVT(a).stages) == 4 for a in ('tiny', 'small', 'medium', 'large'))


def test_dpvt_builds_only_its_blocks_and_honours_attn_drop(monkeypatch):
    from mmdyn.models.backbones import pvt
    from mmdyn.models.backbones.dge import DPVT
    from mmdyn.models.layers import transformer_blocks

    def refuse(*args, **kwargs):
        raise AssertionError('DPVT built a PVT block / SR attention')

    with monkeypatch.context() as mp:  # nothing is built to be discarded
        mp.setattr(pvt, 'PVTBlock', refuse)
        mp.setattr(transformer_blocks, 'SRAttention', refuse)
        plain = DPVT(arch=dict(TINY_PVT), drop_path_rate=0.)
        dropped = DPVT(arch=dict(TINY_PVT), drop_path_rate=0., attn_drop_rate=0.5)
    layout = {k: v.shape for k, v in plain.state_dict().items()}
    assert layout == {k: v.shape for k, v in dropped.state_dict().items()}
    attns = [blk.attn for st in dropped.stages for blk in st.blocks]
    assert len(attns) == sum(TINY_PVT['depths']) and all(a.attn_drop == 0.5 for a in attns)
    dropped.init_weights()
    with torch.no_grad():  # non-uniform point weights
        for n, p in dropped.named_parameters():
            if '.attn.weights.weight' in n:
                p.normal_(0, 0.3)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dropped.train()
        a, b = dropped(x)[-1], dropped(x)[-1]
        assert (a - b).abs().max() > 1e-3  # a new dropout draw each forward
        dropped.eval()
        ev = dropped(x)[-1]
        torch.testing.assert_close(dropped(x)[-1], ev, atol=0, rtol=0)
        torch.testing.assert_close(plain.eval()(x)[-1], ev, atol=0, rtol=0)
        torch.testing.assert_close(plain.train()(x)[-1], ev, atol=1e-5, rtol=0)


def test_realised_flops_match_ops_that_ran():
    """The realised FLOPs against a count of the ops that actually ran (torch's
    ``FlopCounterMode`` on the explicit-attention path), for one image whose gates pick a mix of
    granularities. Our FLOPs are multiply-adds, the counter counts 2 per multiply-add. Covered:
    the patch-embedding and spatial-reduction convolutions, the gates' linears, the q / kv /
    proj / fc1 / fc2 linears on the queries that ran and the attention matmuls. Counted by
    neither: the region pooling that feeds the gates, the pooling of the coarse queries and
    their copy back to the fine positions, norms, activations, softmax and biases."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmdyn.models.layers.attention import explicit_attention
    m, _ = pvt_pair()
    randomize_gates(m, seed=1)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with explicit_attention(m), FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    grains = torch.cat([v.flatten() for v in m.last_maps.values()])
    assert set(grains.tolist()) == {1, 2, 4}  # every granularity ran somewhere
    assert 0 < float(m.last_stats['kept_ratio']) < 1
    assert fc.get_total_flops() == 2 * m.last_flops.item()


@pytest.mark.parametrize('build, frozen', [
    (lambda: DGEPVT(arch=dict(TINY_PVT), frozen_stages=1, drop_path_rate=0.),
     ('stage0.block0', 'stage1.block0', 'stage1.block1')),
    (lambda: DGEViT(arch=dict(TINY_VIT), img_size=64, frozen_stages=2, drop_path_rate=0.),
     ('block0', 'block1')),
])
def test_frozen_stages_freeze_their_gates(build, frozen):
    """The gates of frozen stages are frozen with them (OpenMMLab's ``frozen_stages``: eval
    mode, no gradient): in training their decisions are the eval rule's (no Gumbel noise), the
    same in every training forward; the other gates still sample and train."""
    model = randomize_gates(build())
    model.train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        model(x)
        eval_maps = dict(model.last_maps)
        model.train()
        for seed in range(3):
            torch.manual_seed(seed)
            model(x)
            for key in frozen:
                assert torch.equal(model.last_maps[key], eval_maps[key]), (seed, key)
    layers = model.dge_layers()
    frozen_layers = [m for m in layers if not m.training]
    assert len(frozen_layers) == len(frozen)
    assert all(not p.requires_grad for m in frozen_layers for p in m.parameters())
    assert all(p.requires_grad for m in layers if m.training for p in m.parameters())
    torch.manual_seed(0)
    out = model(x)
    sum(o.float().sum() for o in out).backward()
    assert all(p.grad is None for m in frozen_layers for p in m.parameters())
    assert all(m.gate.proj.weight.grad is not None for m in layers if m.training)
