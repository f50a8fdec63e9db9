"""DiT: routing space, gates, exactness against PVTv2, token skipping, FLOPs and budget."""
import copy

import pytest
import torch

from mmdyn.models.backbones.dit import DEFAULT_MU, DiT
from mmdyn.models.backbones.pvt import PVTv2
from mmdyn.models.utils.dynamic import full_compute
from mmdyn.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')


TINY = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 1, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])


def tiny(**kw):
    kw.setdefault('drop_path_rate', 0.)
    m = DiT(arch=copy.deepcopy(TINY), **kw)
    m.init_weights()
    return m


def shake_gates(m, std=2.0, seed=0):
    """Random gate weights so that decisions differ per token and per image."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gates in list(m.row_gates) + list(m.col_gates):
            for gate in gates:
                gate.proj.weight.copy_(torch.randn(gate.proj.weight.shape, generator=g) * std)
                gate.proj.bias.copy_(torch.tensor([0., 0.5]))


def random_fixed(m, b, img_shape, p_row=0.6, p_col=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = m.scale_shapes(img_shape)
    fixed = {}
    for i, hw in enumerate(shapes):
        for j in range(m.num_stages):
            fixed[('row', i, j)] = (torch.rand(b, hw[0] * hw[1], generator=g) < p_row).float()
        if i < 3:
            for j in range(m.num_stages + 1):
                fixed[('col', i, j)] = (torch.rand(b, generator=g) < p_col).float()
    return fixed


def test_pvtv2_path_equals_pvtv2():
    """Row gates all on + only the PVTv2 staircase's column gates on == PVTv2 (same weights),
    in eval and in training (no stochastic depth)."""
    torch.manual_seed(0)
    pvt = PVTv2(arch=copy.deepcopy(TINY), drop_path_rate=0.)
    pvt.init_weights()
    dit = tiny()
    dit.load_pvtv2(pvt, tile=False)
    dit.set_routing('pvt')
    x = torch.randn(2, 3, 61, 75)
    for mode in (False, True):
        pvt.train(mode)
        dit.train(mode)
        ref = pvt(x)
        out = dit(x)
        assert len(out) == 4
        for a, b in zip(ref, out):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-5
    # realised cost of the path is exactly PVTv2's
    dit.eval()
    dit(x)
    assert torch.allclose(dit.last_flops, torch.full((2, ), float(pvt.static_flops((61, 75))),
                                                     dtype=torch.float64))
    assert dit.base_flops((61, 75)) == pvt.static_flops((61, 75))
    # the convolutions read channels-last maps: their weights stay channels-last after loading
    convs = [m.weight for m in dit.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(w.shape[1] > 1 and w.shape[-1] > 1 for w in convs)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_tiled_pvtv2_weights_fill_every_stage():
    pvt = PVTv2(arch=copy.deepcopy(TINY), drop_path_rate=0.)
    pvt.init_weights()
    dit = tiny()
    dit.load_pvtv2(pvt, tile=True)
    for j in range(dit.num_stages):
        assert torch.equal(dit.stages[2][j][0].ffn.fc1.weight,
                           pvt.stages[2].blocks[0].ffn.fc1.weight)
    for j in range(dit.num_stages + 1):
        assert torch.equal(dit.downs[1][j].embed.projection.weight,
                           pvt.stages[2].patch_embed.projection.weight)
        assert torch.equal(dit.downs[1][j].norm.weight, pvt.stages[1].norm.weight)


def test_alone_equals_batch_eval():
    torch.manual_seed(1)
    m = tiny()
    shake_gates(m)
    m.eval()
    x = torch.randn(3, 3, 64, 64)
    outs = m(x)
    flops = m.last_flops.clone()
    maps = {k: v.clone() for k, v in m.last_maps.items()}
    # the images took different routes
    assert not torch.equal(maps['row_0_0'][0], maps['row_0_0'][1])
    assert flops.unique().numel() > 1
    for b in range(3):
        single = m(x[b:b + 1])
        for o, s in zip(outs, single):
            assert (o[b:b + 1] - s).abs().max() <= 1e-5
        assert m.last_flops[0] == flops[b]
        for k in maps:
            assert torch.equal(m.last_maps[k][0], maps[k][b])


def test_unreached_output_is_zero_whatever_the_batch():
    """An output no path of an image reaches is a zero map for it in eval, alone or next to
    an image that reaches it (not the output norm of a zero value: its bias)."""
    torch.manual_seed(0)
    m = tiny(out_nodes='last')
    with torch.no_grad():
        for norm in m.out_norms:
            norm.bias.normal_()  # a trained norm's bias is not zero
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    fixed = random_fixed(m, 2, (64, 64), p_row=1.0, p_col=1.0)
    for k in fixed:
        if k[0] == 'col':
            fixed[k][1] = 0.  # image 1 takes no column path: only scale 0 is reached
    m.set_decision_override(dict(decisions=fixed))
    with torch.no_grad():
        outs = m(x)
    assert m.last_reached[0, :, -1].all() and not m.last_reached[1, 1:, -1].any()
    assert all(o[0].abs().amax() > 0 for o in outs)
    assert all(torch.equal(o[1], torch.zeros_like(o[1])) for o in outs[1:])
    m.set_decision_override(dict(decisions={k: v[1:] for k, v in fixed.items()}))
    with torch.no_grad():
        alone = m(x[1:])
    for o, a in zip(outs, alone):
        torch.testing.assert_close(o[1:], a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['gather', 'fused', 'map', 'core'])
def test_eval_input_gradients_equal_training(mode):
    """With autograd on, eval (the kept tokens gathered) gives the input gradients of the
    training path (every token computed, the kept ones written) under the same decisions."""
    torch.manual_seed(3)
    m = tiny(sparse_dwconv=mode)
    x = torch.randn(2, 3, 64, 64)
    m.set_decision_override(dict(decisions=random_fixed(m, 2, (64, 64), p_col=1.0)))
    grads = []
    for train in (True, False):
        m.train(train)
        xi = x.clone().requires_grad_()
        outs = m(xi)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads.append(xi.grad)
    scale = float(grads[0].abs().amax())
    assert scale > 0
    # the two paths sum in other orders: a margin relative to the gradients' size
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4 * scale)


def test_no_budget_loss_left_from_an_earlier_forward():
    """A forward that computes no budget loss (eval, every gate on, imposed decisions) leaves
    none behind from the one before."""
    torch.manual_seed(0)
    m = tiny()
    x = torch.randn(2, 3, 64, 64)
    for switch in ('eval', 'force_full', 'override'):
        m.train()
        m(x)
        assert set(m.aux_losses) == {'loss_budget'}
        if switch == 'eval':
            m.eval()
        elif switch == 'force_full':
            m.force_full = True
        else:
            m.set_decision_override(dict(keep_ratio=0.5))
        m(x)
        assert m.aux_losses == {}
        m.force_full = False
        m.set_decision_override(None)


def test_training_under_half_precision_autocast():
    """The expected cost (MAC counts, far beyond float16's range) is kept in float32 under
    autocast; the budget loss is finite and gradients reach the gates."""
    torch.manual_seed(0)
    m = tiny()
    m.train()
    with torch.autocast('cpu', dtype=torch.float16):
        m(torch.randn(2, 3, 64, 64))
    assert m.expected_cost.dtype == torch.float32
    loss = m.aux_losses['loss_budget']
    assert torch.isfinite(loss)
    loss.backward()
    assert m.row_gates[0][0].proj.weight.grad.abs().sum() > 0


def test_train_equals_eval_with_fixed_gates():
    """Dense training computation (straight-through) == sparse eval with the same decisions."""
    torch.manual_seed(2)
    m = tiny()
    x = torch.randn(2, 3, 64, 80)
    m.set_decision_override(dict(decisions=random_fixed(m, 2, (64, 80))))
    m.train()
    tr = m(x)
    tr_flops = m.last_flops.clone()
    m.eval()
    ev = m(x)
    for a, b in zip(tr, ev):
        assert (a - b).abs().max() <= 1e-5
    assert torch.equal(tr_flops, m.last_flops)


def test_gate_gradients_and_budget_loss():
    torch.manual_seed(3)
    m = tiny(budget=0.5, budget_weight=2.0)
    m.train()
    x = torch.randn(2, 3, 64, 64)
    out = m(x)
    ratio = m.expected_cost
    assert ratio.shape == (2, ) and ratio.requires_grad
    loss = m.aux_losses['loss_budget']
    assert torch.allclose(loss, 2.0 * ((ratio - 0.5) ** 2).mean())
    # a random projection of the outputs: their mean is no loss (the output norms make every
    # token's channel mean the norm's bias, zero at initialisation)
    g = torch.Generator().manual_seed(0)
    (loss + sum((o * torch.randn(o.shape, generator=g)).sum() for o in out)).backward()
    assert m.row_gates[0][0].proj.weight.grad.abs().sum() > 0
    assert m.col_gates[0][1].proj.weight.grad.abs().sum() > 0
    # every node some image reached with kept tokens: its row gate and its blocks get gradients
    # (which nodes are reached depends on the draw, so the test reads them off the forward)
    trained = 0
    for i in range(4):
        for j in range(m.num_stages):
            kept = m.last_maps[f'row_{i}_{j}'].flatten(1).sum(1) > 0
            if (m.last_reached[:, i, j] & kept).any():
                assert m.row_gates[i][j].proj.weight.grad.abs().sum() > 0, (i, j)
                assert m.stages[i][j][0].ffn.fc2.weight.grad.abs().sum() > 0, (i, j)
                trained += 1
    assert trained >= 2
    # the expected cost with hard decisions equals the realised cost with the stages'
    # full cost scaled by the kept fraction (Eq. 5): bounded by the fully connected net
    assert (ratio.detach() * m.base_flops((64, 64)) <= m.fully_flops((64, 64)) + 1).all()
    # ... and its value (Eq. 5-6), recomputed from the decisions: stem + for every reached
    # node F[i][j], its row gate (a linear C -> 2 per token) + kept fraction x the stage's
    # full cost, its column gate (a linear C -> 2 on the pooled token) + the column path if on
    assert m.last_reached is not None and m.last_reached.any(2).all()
    shapes = m.scale_shapes((64, 64))
    want = torch.full((2, ), float(m.stem.flops((64, 64))), dtype=torch.float64)
    for i, hw in enumerate(shapes):
        n = hw[0] * hw[1]
        for j in range(m.num_stages + 1):
            on = m.last_reached[:, i, j].double()
            if j < m.num_stages:
                frac = m.last_maps[f'row_{i}_{j}'].flatten(1).double().mean(1)
                full = sum(float(blk.flops(n, hw)) for blk in m.stages[i][j])
                gate = m.row_gates[i][j].proj
                want += on * (frac * full + n * gate.in_features * gate.out_features)
            if i < 3:
                col = m.last_maps[f'col_{i}_{j}'].flatten().double()
                gate = m.col_gates[i][j].proj
                want += col * m.downs[i][j].flops(hw) + on * gate.in_features * gate.out_features
    torch.testing.assert_close(ratio.detach().double(), want / m.base_flops((64, 64)),
                               rtol=1e-6, atol=0)
    fracs = torch.cat([v.flatten(1).mean(1) for k, v in m.last_maps.items()
                       if k.startswith('row_')])
    assert ((fracs > 0) & (fracs < 1)).any()  # a real mix of kept and skipped tokens


def test_realised_flops_match_block_count():
    torch.manual_seed(4)
    m = tiny()
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    shapes = m.scale_shapes((64, 64))

    def count(fixed):
        # independent count: every column on here, so every node is reached
        tot = torch.full((2, ), float(m.stem.flops((64, 64))), dtype=torch.float64)
        for i, hw in enumerate(shapes):
            for j in range(m.num_stages):
                k = fixed[('row', i, j)].sum(1)
                for b in range(2):
                    if k[b] > 0:
                        tot[b] += sum(float(blk.flops(int(k[b]), hw)) for blk in m.stages[i][j])
            if i < 3:
                for j in range(m.num_stages + 1):
                    tot += fixed[('col', i, j)].double() * m.downs[i][j].flops(hw)
        return tot

    dense = {k: torch.ones_like(v) for k, v in random_fixed(m, 2, (64, 64)).items()}
    m.set_decision_override(dict(decisions=dense))
    m(x)
    full = m.last_flops.clone()
    assert torch.allclose(full, count(dense))
    assert torch.allclose(full, torch.full((2, ), float(m.static_flops((64, 64))),
                                           dtype=torch.float64))
    sparse = random_fixed(m, 2, (64, 64), p_row=0.4, p_col=1.0 - 1e-7, seed=5)
    sparse = {k: (v if k[0] == 'row' else torch.ones_like(v)) for k, v in sparse.items()}
    m.set_decision_override(dict(decisions=sparse))
    m(x)
    assert torch.allclose(m.last_flops, count(sparse))
    assert (m.last_flops < full).all()
    kept = sum(v.sum(1) for k, v in sparse.items() if k[0] == 'row')
    total = sum(v.shape[1] for k, v in sparse.items() if k[0] == 'row')
    assert torch.allclose(m.last_stats['kept_ratio'], (kept / total).float())


def test_unreached_nodes_are_skipped():
    """With every column gate off only scale 0 runs; the coarser outputs are zeros and cost
    nothing."""
    m = tiny(out_nodes='last')
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    fixed = random_fixed(m, 1, (64, 64), p_row=0.999999)
    fixed = {k: (torch.ones_like(v) if k[0] == 'row' else torch.zeros_like(v))
             for k, v in fixed.items()}
    m.set_decision_override(dict(decisions=fixed))
    outs = m(x)
    hw = m.scale_shapes((64, 64))[0]
    expect = m.stem.flops((64, 64)) + sum(
        float(blk.flops(hw[0] * hw[1], hw)) for j in range(4) for blk in m.stages[0][j])
    assert m.last_flops.item() == pytest.approx(expect)
    assert all(o.abs().max() == 0 for o in outs[1:])
    assert m.last_maps['row_2_1'].sum() == 0


def test_nodes_that_cannot_reach_an_output_do_not_run():
    """With outputs at scales 0 and 1 only, every gate on: the nodes that no path leads from
    to ``F[0][1]`` or ``F[1][2]`` (scales 2-3, ``F[0][3..4]``, ``F[1][3..4]``) do not run and
    cost nothing; the outputs equal the four-output model's."""
    torch.manual_seed(0)
    m4 = tiny(gate_momentum=None)
    m2 = tiny(gate_momentum=None, out_indices=(0, 1))
    m2.load_state_dict(m4.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for m in (m2, m4):
        m.eval()
        m.force_full = True
    with torch.no_grad():
        o2, o4 = m2(x), m4(x)
    for a, b in zip(o2, o4[:2]):
        torch.testing.assert_close(a, b)
    shapes = m2.scale_shapes((64, 64))

    def stage(i, j):
        n = shapes[i][0] * shapes[i][1]
        return sum(float(blk.flops(n, shapes[i])) for blk in m2.stages[i][j])
    expect = m2.stem.flops((64, 64)) + stage(0, 0) + stage(0, 1) + stage(1, 0) + stage(1, 1) \
        + sum(m2.downs[0][j].flops(shapes[0]) for j in range(3))
    assert m2.last_flops[0].item() == pytest.approx(expect)
    assert m4.last_flops[0].item() == pytest.approx(m4.static_flops((64, 64)))
    # the static network of those outputs is what ran: no saving is reported for the pruning
    assert m2.static_flops((64, 64)) == pytest.approx(expect)
    assert m2.last_stats['flops_ratio'][0].item() == pytest.approx(1.0)
    reached = m2.last_reached[0]
    assert not reached[2:].any() and not reached[0, 3:].any() and not reached[1, 3:].any()
    assert reached[0, :3].all() and reached[1, :3].all()


def test_gates_start_on_the_pvtv2_path():
    """``row_init_on`` / ``col_init_on`` pairs: the gates on the PVTv2 path (``B[i][i]``,
    ``P[i][i+1]``) start at the first probability, the others at the second."""
    m = tiny(row_init_on=(0.98, 0.02), col_init_on=(0.9, 0.05))
    for i in range(4):
        for j in range(4):
            p_on = m.row_gates[i][j].proj.bias.softmax(0)[1].item()
            assert p_on == pytest.approx(0.98 if j == i else 0.02, abs=1e-6)
    for i in range(3):
        for j in range(5):
            p_on = m.col_gates[i][j].proj.bias.softmax(0)[1].item()
            assert p_on == pytest.approx(0.9 if j == i + 1 else 0.05, abs=1e-6)
    m1 = tiny()  # a float is the same for every row gate (the paper: all 1 at the start)
    assert {round(g.proj.bias.softmax(0)[1].item(), 6) for r in m1.row_gates for g in r} == {0.98}
    with pytest.raises(ValueError):
        tiny(row_init_on=(0.9, 0.1, 0.2))
    with pytest.raises(ValueError):
        tiny(row_init_on=(0.9, 1.0))


def test_dynamic_flops_include_gates_and_fall():
    torch.manual_seed(6)
    m = tiny()
    shake_gates(m)
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    m(x)
    dyn = m.last_flops.clone()
    with full_compute(m):
        outs_full = m(x)
        assert torch.allclose(m.last_flops, torch.full((2, ), float(m.static_flops((64, 64))),
                                                       dtype=torch.float64))
    assert (dyn < m.static_flops((64, 64))).all()
    # "fully" routing is the force_full network
    m.set_routing('fully')
    for a, b in zip(m(x), outs_full):
        assert torch.equal(a, b)


def test_momentum_gate_weights_used_in_eval():
    torch.manual_seed(7)
    m = tiny()
    shake_gates(m)
    for gates in list(m.row_gates) + list(m.col_gates):
        for g in gates:
            g.momentum_update()
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    ref = m(x)
    maps = {k: v.clone() for k, v in m.last_maps.items()}
    with torch.no_grad():  # change the live weights only: eval still uses the EMA copy
        for gates in m.row_gates:
            for g in gates:
                g.proj.weight.zero_()
                g.proj.bias.copy_(torch.tensor([10., -10.]))
    out = m(x)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)
    assert all(torch.equal(maps[k], m.last_maps[k]) for k in maps)
    m.train()
    m(x)  # training uses the live weights: every row gate now skips
    assert all(m.last_maps[f'row_{i}_{j}'].sum() == 0 for i in range(4) for j in range(4))


@pytest.mark.parametrize('out_nodes', ['pvt', 'last'])
@pytest.mark.parametrize('size', [(64, 64), (57, 83)])
def test_dense_outputs(out_nodes, size):
    m = tiny(out_nodes=out_nodes)
    shake_gates(m)
    m.eval()
    outs = m(torch.randn(1, 3, *size))
    h, w = size
    for i, o in enumerate(outs):
        s = 4 * 2 ** i
        assert o.shape == (1, TINY['embed_dims'][i], -(-h // s), -(-w // s))
    cols = [m.out_column(i) for i in range(4)]
    assert cols == ([1, 2, 3, 4] if out_nodes == 'pvt' else [4, 4, 4, 4])


def test_ablation_routings():
    torch.manual_seed(8)
    x = torch.randn(2, 3, 64, 64)
    m = tiny(routing='scale_only')
    shake_gates(m)
    m.eval()
    m(x)
    assert all(m.last_maps[f'row_0_{j}'].min() == 1 for j in range(4))
    m.set_routing('depth_only')
    m(x)
    for i in range(3):
        for j in range(5):
            c = m.last_maps[f'col_{i}_{j}']
            assert (c == float(j == i + 1)).all() or (j != i + 1 and c.sum() == 0)
    m.set_routing('random')
    m.random_keep = (0.5, 0.5)
    m(x)
    assert 0 < m.last_stats['kept_ratio'].mean() < 1
    s = tiny(routing='static')
    s.train()
    out = s(x)
    (sum(o.mean() for o in out) + s.aux_losses['loss_budget']).backward()
    assert s.row_gates[0][0].logits.grad is not None
    s.eval()
    s(x)
    # static masks: the same decisions for every image
    assert torch.equal(s.last_maps['row_0_0'][0], s.last_maps['row_0_0'][1])


def test_bad_input():
    with pytest.raises(ValueError, match='unknown size'):
        DiT(arch='b9')
    for mu in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match='budget'):
            DiT(arch=copy.deepcopy(TINY), budget=mu)
    for m in (0, -1):
        with pytest.raises(ValueError, match='num_stages'):
            DiT(arch=copy.deepcopy(TINY), num_stages=m)
    with pytest.raises(ValueError, match='routing'):
        DiT(arch=copy.deepcopy(TINY), routing='nope')
    with pytest.raises(ValueError, match='num_stages >= 4'):
        DiT(arch=copy.deepcopy(TINY), num_stages=2, routing='pvt')
    with pytest.raises(ValueError, match='expects'):
        tiny()(torch.randn(1, 1, 32, 32))


def test_other_num_stages():
    for M in (1, 2, 6):
        m = tiny(num_stages=M)
        shake_gates(m)
        m.eval()
        outs = m(torch.randn(1, 3, 64, 64))
        assert len(outs) == 4 and outs[3].shape == (1, 32, 2, 2)
        assert len(m.stages[0]) == M and len(m.downs[0]) == M + 1


def test_registry_and_sizes():
    """Registered; B1..B5 have PVTv2's per-scale settings; the paper's mu per size; B2's
    fully connected cost and parameter counts (meta device)."""
    with torch.device('meta'):
        m = MODELS.build(dict(type='mmdyn.DiT', arch='b2'))
    assert isinstance(m, DiT)
    assert m.depths == [3, 4, 6, 3] and m.embed_dims == [64, 128, 320, 512]
    assert m.budget_loss.target == pytest.approx(0.95)
    assert DEFAULT_MU['b5'] == pytest.approx(10.3 / 11.8)
    fully = m.static_flops((224, 224)) / 1e9
    assert fully == pytest.approx(16.22, abs=0.01)   # paper (Table 6): 15.6
    assert abs(fully - 15.6) / 15.6 < 0.05
    assert m.base_flops((224, 224)) / 1e9 == pytest.approx(4.03, abs=0.01)
    pg = m.param_groups()
    # every stage of scale i holds the PVTv2 stage's blocks
    with torch.device('meta'):
        pvt = PVTv2(arch='b2')
    n3 = sum(p.numel() for p in pvt.stages[3].blocks.parameters())
    assert all(n == n3 for n in pg['stages'][3])
    assert pg['total'] / 1e6 == pytest.approx(101.3, abs=0.1)


def test_pretrained_pvtv2_checkpoint_tiled(tmp_path):
    """init_cfg=Pretrained with a PVTv2 checkpoint: every grid copy gets the PVTv2 weights, so
    the PVTv2 path equals the PVTv2; a DiT checkpoint loads as is."""
    torch.manual_seed(9)
    pvt = PVTv2(arch=copy.deepcopy(TINY), drop_path_rate=0.)
    pvt.init_weights()
    pvt.eval()
    ckpt = tmp_path / 'pvt.pth'
    torch.save({'state_dict': pvt.state_dict()}, ckpt)
    dit = DiT(arch=copy.deepcopy(TINY), drop_path_rate=0., routing='pvt',
              init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    dit.init_weights()
    dit.eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(pvt(x), dit(x)):
        assert (a - b).abs().max() <= 1e-5
    assert torch.equal(dit.stages[1][3][1].attn.q.weight, pvt.stages[1].blocks[1].attn.q.weight)
    # round trip of a DiT checkpoint (gates included)
    shake_gates(dit)
    ckpt2 = tmp_path / 'dit.pth'
    torch.save({'state_dict': dit.state_dict()}, ckpt2)
    dit2 = DiT(arch=copy.deepcopy(TINY), drop_path_rate=0.,
               init_cfg=dict(type='Pretrained', checkpoint=str(ckpt2)))
    dit2.init_weights()
    for (k, v), (k2, v2) in zip(dit.state_dict().items(), dit2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_tau_sets_every_gate():
    m = tiny()
    m.tau = 0.5
    assert all(g.tau == 0.5 for gates in list(m.row_gates) + list(m.col_gates) for g in gates)
    with pytest.raises(ValueError):
        m.tau = 0.


def test_budget_loss_drives_cost_down():
    """A few steps on the budget loss alone (gate parameters only) lower the realised eval
    cost towards mu: the straight-through gradients reach both gate kinds."""
    torch.manual_seed(10)
    m = tiny(budget=0.2, budget_weight=1.0, gate_momentum=None)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    m(x)
    before = m.last_flops.mean().item()
    params = [p for n, p in m.named_parameters() if 'gates' in n]
    opt = torch.optim.SGD(params, lr=2.0)
    m.train()
    for _ in range(15):
        opt.zero_grad()
        m(x)
        m.aux_losses['loss_budget'].backward()
        opt.step()
    m.eval()
    m(x)
    after = m.last_flops.mean().item()
    assert after < 0.8 * before


def test_attention_selection_ablation():
    """routing='attention' keeps the given fraction of tokens per reached stage, those with the
    most attention received, and counts the attention it ran to decide."""
    torch.manual_seed(11)
    m = tiny(routing='attention', random_keep=(0.25, 0.5))
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    m(x)
    shapes = m.scale_shapes((64, 64))
    for i, hw in enumerate(shapes):
        n = hw[0] * hw[1]
        k = max(1, round(0.25 * n))
        for j in range(4):
            kept = m.last_maps[f'row_{i}_{j}'].flatten(1).sum(1)
            reached = m.last_reached[:, i, j]
            assert torch.equal(kept, torch.where(reached, float(k), 0.).float())
    # F[0][0] is the stem: its decision is the top-k of the attention received, cell-wise
    blk = m.stages[0][0][0]
    with torch.no_grad():
        _, logits = blk.attn(blk.norm1(m.stem(x)[0]), shapes[0], return_logits=True)
    recv = logits.softmax(-1).mean(1).sum(1)
    kh, kw = blk.attn.kv_shape(shapes[0])
    imp = torch.nn.functional.interpolate(recv.view(2, 1, kh, kw), size=shapes[0],
                                          mode='nearest').flatten(1)
    for b in range(2):
        sel = m.last_maps['row_0_0'][b].flatten().bool()
        assert imp[b][sel].min() >= imp[b][~sel].max()
    fixed = {}
    for key in [k for k in m.last_maps if k.startswith('row')]:
        fixed[('row', ) + tuple(int(v) for v in key.split('_')[1:])] = m.last_maps[key].flatten(1)
    for key in [k for k in m.last_maps if k.startswith('col')]:
        fixed[('col', ) + tuple(int(v) for v in key.split('_')[1:])] = m.last_maps[key].flatten()
    flops_attn = m.last_flops.clone()
    m.set_decision_override(dict(decisions=fixed))
    m(x)  # same decisions imposed: no decision cost
    extra = sum(float(m.stages[i][j][0].attn.flops(hw[0] * hw[1], hw))
                * m.last_reached[:, i, j].double()
                for i, hw in enumerate(shapes) for j in range(4))
    col_gates = sum(2 * m.embed_dims[i] * m.last_reached[:, i, j].double()
                    for i in range(3) for j in range(5))
    assert torch.allclose(flops_attn, m.last_flops + extra + col_gates)


def test_realised_flops_match_ops_that_ran():
    """The realised FLOPs against a count of the ops that actually ran (torch's
    ``FlopCounterMode`` on the explicit-attention path), for one image with real skipping (mixed
    kept tokens, a skipped column path, unreached nodes). Our FLOPs are multiply-adds, the
    counter counts 2 per multiply-add. Covered by the counter: the stem and column-path
    convolutions, every linear (q, kv, proj, fc1, fc2, the row and column gates), the spatial
    reduction conv and the attention matmuls. Not counted by the counter and added here: the
    MixFFN depth-wise conv, which the ``'gather'`` sparse path runs as element-wise products at
    the kept tokens (k*k*hidden MACs per kept token). Neither side counts norms, activations,
    softmax, biases or the gathers / scatters. (The default ``'map'`` path runs the depth-wise
    conv on the whole map, which the counter would see at full size while the realised FLOPs
    count the kept tokens.)"""
    from torch.utils.flop_counter import FlopCounterMode

    from mmdyn.models.layers.attention import explicit_attention
    torch.manual_seed(0)
    m = tiny(sparse_dwconv='gather')
    m.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # the first stage keeps all of its tokens (the dense path); the other gate weights are
    # drawn until one forward shows real skipping: partly kept stages, a column path off and
    # nodes never reached (which draw first does depends on the kernels' rounding)
    for seed in range(100):
        shake_gates(m, seed=seed)
        with torch.no_grad():
            m.row_gates[0][0].proj.weight.zero_()
            m.row_gates[0][0].proj.bias.copy_(torch.tensor([0., 5.]))
        with explicit_attention(m), FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        kept = [m.last_maps[f'row_{i}_{j}'].mean().item()
                for i in range(4) for j in range(m.num_stages)]
        if (any(0 < r < 1 for r in kept) and 1 in kept and not m.last_reached.all()
                and any(m.last_maps[f'col_{i}_{j}'].item() == 0
                        for i in range(3) for j in range(5))):
            break
    else:
        raise AssertionError('no gate draw shows every kind of skipping')
    dw = 0
    for i in range(4):
        for j in range(m.num_stages):
            k = m.last_maps[f'row_{i}_{j}'].sum().item()
            n = m.last_maps[f'row_{i}_{j}'][0].numel()
            if 0 < k < n:  # a stage keeping every token runs densely: the counter sees its conv
                dw += sum(k * blk.ffn.dwconv.weight.numel() for blk in m.stages[i][j])
    assert fc.get_total_flops() + 2 * dw == 2 * m.last_flops.item()


def test_cost_cache_is_bounded(monkeypatch):
    """Every input size adds its edge costs; past the bound the cache starts over (multi-scale
    training sees hundreds of sizes), with the same costs recomputed."""
    import mmdyn.models.backbones.dit as dit_module
    monkeypatch.setattr(dit_module, 'COST_CACHE_ENTRIES', 3)
    m = tiny()
    first = m._costs((64, 64))
    for side in (96, 128, 160):
        m._costs((side, side))
    assert len(m._cost_cache) == 1 and (160, 160) in m._cost_cache
    again = m._costs((64, 64))
    assert again is not first and again['base'] == first['base'] and again['row'] == first['row']
