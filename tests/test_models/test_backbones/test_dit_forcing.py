"""DiT: valid parameters per image (Table 1's "valid parameters utilized") and the deterministic
forcing used by the speed check (the decision override's ``keep_ratio`` / ``columns``)."""
import copy
import math

import pytest
import torch

from mmdyn.models.backbones.dit import DiT
from mmdyn.models.utils.dynamic import collect_dynamic_records, override_decisions
from mmdyn.registry import MODELS
from mmdyn.utils.errors import UserValueError


pytestmark = pytest.mark.usefixtures('one_thread')


TINY = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 1, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])
IMG = (64, 64)


def tiny(**kw):
    kw.setdefault('drop_path_rate', 0.)
    m = DiT(arch=copy.deepcopy(TINY), **kw)
    m.init_weights()
    return m.eval()


def nparams(module):
    return sum(p.numel() for p in module.parameters())


def independent_valid_params(m, fixed, b):
    """Valid parameters of image ``b`` under the decisions ``fixed``, counted from the
    topology alone: a node is reached if its left node is (identity path) or a taken column
    path enters it; a stage counts if it computed a token, a column path if it was taken; the
    stem and the output norms of the reached outputs always."""
    M = m.num_stages
    reached = [[False] * (M + 1) for _ in range(4)]
    total = nparams(m.stem)
    for j in range(M + 1):
        for i in range(4):
            r = (i == 0 and j == 0) or (j > 0 and reached[i][j - 1]) or (
                i > 0 and reached[i - 1][j] and bool(fixed[('col', i - 1, j)][b] > 0))
            reached[i][j] = r
            if not r:
                continue
            if j < M and bool(fixed[('row', i, j)][b].sum() > 0):
                total += nparams(m.stages[i][j])
            if i < 3 and bool(fixed[('col', i, j)][b] > 0):
                total += nparams(m.downs[i][j])
    for i in m.out_indices:
        if reached[i][m.out_column(i)]:
            total += nparams(m.out_norms[i])
    return total


def test_valid_params_match_independent_count():
    """A forced pattern where the two images use different stages and column paths: the
    recorded valid parameters equal the count from the topology, per image."""
    m = tiny(out_nodes='last')
    shapes = m.scale_shapes(IMG)
    g = torch.Generator().manual_seed(0)
    fixed = {}
    for i, hw in enumerate(shapes):
        n = hw[0] * hw[1]
        for j in range(4):
            row = (torch.rand(2, n, generator=g) < 0.5).float()
            if (i + j) % 3 == 0:
                row[0] = 0.   # image 0 computes nothing in these stages
            if (i + 2 * j) % 4 == 1:
                row[1] = 0.
            fixed[('row', i, j)] = row
        if i < 3:
            for j in range(5):
                fixed[('col', i, j)] = torch.tensor([float(j % 2 == 0), float(j >= 2)])
    m.set_decision_override(dict(decisions=fixed))
    m(torch.randn(2, 3, *IMG))
    expect = [independent_valid_params(m, fixed, b) for b in range(2)]
    assert expect[0] != expect[1]
    assert m.last_valid_params.tolist() == [float(e) for e in expect]
    total = nparams(m)
    assert torch.allclose(m.last_stats['param_ratio'],
                          torch.tensor([e / total for e in expect]))
    # what get_flops averages: the per-image entry of last_stats
    rec = collect_dynamic_records(m)
    assert torch.allclose(rec['valid_params'].double(), torch.tensor(expect, dtype=torch.float64))
    # nothing off: every parameter of the network is valid (no gate ran)
    m.set_decision_override(dict(decisions={k: torch.ones_like(v) for k, v in fixed.items()}))
    m(torch.randn(2, 3, *IMG))
    gates = sum(nparams(g) for gs in list(m.row_gates) + list(m.col_gates) for g in gs)
    assert m.last_valid_params.tolist() == [float(total - gates)] * 2


def test_valid_params_of_gates_and_pvt_path():
    """Learned gates that run count; the PVTv2 path (routing='pvt') uses exactly the PVTv2
    modules: stem, the 4 stages, 3 patch embeddings (with their norms), the output norms."""
    m = tiny()
    m.set_routing('pvt')
    m(torch.randn(1, 3, *IMG))
    path = (nparams(m.stem) + sum(nparams(m.stages[i][min(i, 3)]) for i in range(4))
            + sum(nparams(m.downs[i][i + 1]) for i in range(3))
            + sum(nparams(n) for n in m.out_norms))
    assert m.last_valid_params.item() == path
    # classification output (scale 3 only): the other output norms are not used
    c = tiny(out_indices=(3, ), routing='pvt')
    c(torch.randn(1, 3, *IMG))
    assert c.last_valid_params.item() == path - sum(nparams(n) for n in c.out_norms[:3])
    # dynamic gates with everything on: the gates that ran are added
    d = tiny()
    with torch.no_grad():
        for gs in list(d.row_gates) + list(d.col_gates):
            for gate in gs:
                gate.proj.weight.zero_()
                gate.proj.bias.copy_(torch.tensor([-5., 5.]))
    d(torch.randn(1, 3, *IMG))
    assert d.last_valid_params.item() == nparams(d)


def forced_count(m, img, ratio, columns):
    """Independent MACs under the forcing: stem, per needed stage the blocks at
    ``floor(N ratio)`` kept tokens, the column paths."""
    shapes = m.scale_shapes(img)
    tot = float(m.stem.flops(img))
    kept_all, n_all = 0, 0
    for i, hw in enumerate(shapes):
        n = hw[0] * hw[1]
        k = math.floor(n * ratio + 1e-9)
        if columns == 'all':
            stages = range(4)
            cols = range(5) if i < 3 else []
        else:  # PVTv2 staircase: B[i][i] and P[i][i+1]
            stages = [i]
            cols = [i + 1] if i < 3 else []
        for j in stages:
            if k > 0:
                tot += sum(float(b.flops(k, hw)) for b in m.stages[i][j])
            kept_all += k
        n_all += 4 * n
        for j in cols:
            tot += m.downs[i][j].flops(hw)
    return tot, kept_all / n_all


@pytest.mark.parametrize('columns', ['all', 'pvt'])
def test_forced_keep_ratio_skips_and_flops(columns):
    """Every reached stage keeps the same evenly spaced floor(N r) tokens, no gate runs, the
    realised FLOPs equal the independent count and fall with r; r = 1 with the PVTv2 columns
    is PVTv2 (C_base), r = 1 with all columns the fully connected network."""
    x = torch.randn(2, 3, *IMG)
    shapes = None
    flops = {}
    for r in (1.0, 0.5, 0.25):
        m = tiny(out_indices=(3, ), decision_override=dict(keep_ratio=r, columns=columns))
        shapes = m.scale_shapes(IMG)
        m(x)
        expect, kept_ratio = forced_count(m, IMG, r, columns)
        assert torch.allclose(m.last_flops, torch.full((2, ), expect, dtype=torch.float64))
        flops[r] = expect
        for i, hw in enumerate(shapes):
            n = hw[0] * hw[1]
            k = math.floor(n * r + 1e-9)
            for j in range(4):
                on = columns == 'all' or j == i
                mask = m.last_maps[f'row_{i}_{j}'].flatten(1)
                assert mask.sum(1).tolist() == [float(k if on else 0)] * 2
                if on:  # same pattern for both images, evenly spaced
                    assert torch.equal(mask[0], mask[1])
                    idx = mask[0].nonzero().flatten()
                    if k > 1:
                        gaps = idx[1:] - idx[:-1]
                        assert gaps.max() - gaps.min() <= 1
        if columns == 'pvt':
            # the skip ratio over the stages of the PVTv2 path
            kept = sum(m.last_maps[f'row_{i}_{i}'].flatten(1).sum(1) for i in range(4))
            n = sum(hw[0] * hw[1] for hw in shapes)
            assert (kept / n - r).abs().max() < 0.02
    if columns == 'pvt':
        assert flops[1.0] == m.base_flops(IMG)
    else:
        assert flops[1.0] == m.static_flops(IMG)
    assert flops[0.25] < flops[0.5] < flops[1.0]


def test_forced_outputs_equal_fixed_decisions_and_training():
    """The forcing is the fixed-decision pattern: same outputs as imposing it explicitly, the
    same in training (dense, masked) and in eval (sparse), and no budget loss."""
    torch.manual_seed(1)
    m = tiny(decision_override=dict(keep_ratio=0.5, columns='all'))
    x = torch.randn(1, 3, *IMG)
    out = m(x)
    f = m.last_flops.clone()
    fixed = {}
    for i, hw in enumerate(m.scale_shapes(IMG)):
        for j in range(4):
            fixed[('row', i, j)] = m.forced_row_mask(hw[0] * hw[1]).float()[None]
        if i < 3:
            for j in range(5):
                fixed[('col', i, j)] = torch.ones(1)
    m.set_decision_override(dict(decisions=fixed))
    ref = m(x)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    assert torch.equal(f, m.last_flops)
    m.set_decision_override(dict(keep_ratio=0.5, columns='all'))
    m.train()
    tr = m(x)
    for a, b in zip(out, tr):
        assert (a - b).abs().max() <= 1e-5
    assert m.aux_losses == {}


def test_forcing_from_config_and_bad_values():
    m = MODELS.build(dict(type='mmdyn.DiT', arch=copy.deepcopy(TINY),
                          decision_override=dict(keep_ratio=0.5, columns='pvt')))
    assert m.decision_override == dict(keep_ratio=0.5, columns='pvt')
    mask = m.forced_row_mask(10)
    assert mask.tolist() == [False, True] * 5
    assert int(m.forced_row_mask(49).sum()) == 24
    # the shared evenly spaced rule: floor(7 * 0.4) = 2 of 7 tokens, at 2 and 4
    m.set_decision_override(dict(keep_ratio=0.4))
    assert m.forced_row_mask(7).nonzero().flatten().tolist() == [2, 4]
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match='keep_ratio'):
            DiT(arch=copy.deepcopy(TINY), decision_override=dict(keep_ratio=bad))
    with pytest.raises(ValueError, match='columns'):
        DiT(arch=copy.deepcopy(TINY), decision_override=dict(keep_ratio=0.5, columns='some'))
    with pytest.raises(ValueError, match='num_stages'):
        DiT(arch=copy.deepcopy(TINY), num_stages=2, decision_override=dict(keep_ratio=0.5))
    with pytest.raises(ValueError, match='keys'):
        DiT(arch=copy.deepcopy(TINY), decision_override=dict(keep=0.5))
    # the removed spellings say the new one
    with pytest.raises(ValueError, match=r'decision_override=dict\(keep_ratio='):
        DiT(arch=copy.deepcopy(TINY), forced_keep_ratio=0.5)
    with pytest.raises(ValueError, match=r'decision_override=dict\(columns='):
        DiT(arch=copy.deepcopy(TINY), forced_columns='pvt')
    with pytest.raises(TypeError, match='unexpected'):
        DiT(arch=copy.deepcopy(TINY), forced=0.5)


def test_imposed_decisions_are_checked():
    """``decisions`` missing a reached node's entry, or of another batch or map size: one
    clear error naming the entry and the shape it needs."""
    m = tiny()
    x = torch.randn(2, 3, *IMG)
    shapes = m.scale_shapes(IMG)
    full = {('row', i, j): torch.ones(2, h * w) for i, (h, w) in enumerate(shapes)
            for j in range(4)}
    full.update({('col', i, j): torch.ones(2) for i in range(3) for j in range(5)})
    m.set_decision_override(dict(decisions=full))
    with torch.no_grad():
        m(x)  # complete and of the right shapes: runs
    cases = [({k: v for k, v in full.items() if k != ('row', 2, 1)},
              r"has no \('row', 2, 1\)"),
             (full | {('row', 0, 0): torch.ones(3, 256)},
              r"decisions\[\('row', 0, 0\)\] must be \[B, N\].*= \[2, 256\].*got \[3, 256\]"),
             (full | {('row', 1, 0): torch.ones(2, 16)}, r"= \[2, 64\].*got \[2, 16\]"),
             (full | {('col', 0, 0): torch.ones(2, 1)}, r"\('col', 0, 0\)\] must be \[B\]")]
    for decisions, msg in cases:
        m.set_decision_override(dict(decisions=decisions))
        with pytest.raises(UserValueError, match=msg), torch.no_grad():
            m(x)


def test_override_context_restores_learned_decisions():
    """Inside ``override_decisions`` DiT runs the forced pattern (the outputs and FLOPs of the
    same override given to the constructor); after it, the learned gates decide again: the
    outputs equal those of a forward before entering."""
    torch.manual_seed(2)
    m = tiny()
    forced = tiny(decision_override=dict(keep_ratio=0.5, columns='pvt'))
    forced.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, *IMG)
    before = m(x)
    f_before = m.last_flops.clone()
    ref = forced(x)
    with override_decisions(m, keep_ratio=0.5, columns='pvt') as same:
        assert same is m
        out = m(x)
        assert torch.equal(m.last_flops, forced.last_flops)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    assert m.decision_override is None
    after = m(x)
    for a, b in zip(after, before):
        assert torch.equal(a, b)
    assert torch.equal(m.last_flops, f_before) and not torch.equal(f_before, forced.last_flops)


def test_block_table():
    """The per-stage / per-path table of the last forward: the stem plus its FLOPs is the mean
    realised cost, the computed fractions are the decisions, unreached nodes cost nothing."""
    m = tiny(out_nodes='last')
    shapes = m.scale_shapes(IMG)
    g = torch.Generator().manual_seed(3)
    fixed = {}
    for i, hw in enumerate(shapes):
        for j in range(4):
            fixed[('row', i, j)] = (torch.rand(2, hw[0] * hw[1], generator=g) < 0.3).float()
        if i < 3:
            for j in range(5):
                fixed[('col', i, j)] = torch.tensor([float(j == 2), 1.])
    m.set_decision_override(dict(decisions=fixed))
    m(torch.randn(2, 3, *IMG))
    rows = m.block_table()
    assert len(rows) == 16 + 15
    assert all(list(r) == ['block', 'tokens', 'kept_ratio', 'flops', 'reached', 'skip_reached']
               for r in rows)
    assert rows[0]['block'] == 'B[0][0]' and rows[16]['block'] == 'P[0][0]'
    total = m.stem.flops(IMG) + sum(r['flops'] for r in rows)
    assert total == pytest.approx(m.last_flops.mean().item())
    by = {r['block']: r for r in rows}
    # image 0 reaches scale 1 only at column 2: B[1][0], B[1][1] run for image 1 only
    assert by['B[1][0]']['reached'] == 0.5
    assert by['B[1][0]']['kept_ratio'] == pytest.approx(
        fixed[('row', 1, 0)][1].mean().item() / 2)
    assert by['B[1][0]']['tokens'] == pytest.approx(fixed[('row', 1, 0)][1].sum().item() / 2)
    assert by['B[1][0]']['skip_reached'] == pytest.approx(
        1 - fixed[('row', 1, 0)][1].mean().item())
    assert by['P[0][1]']['kept_ratio'] == 0.5 and by['P[0][2]']['kept_ratio'] == 1.0
    assert by['P[0][1]']['flops'] == pytest.approx(m.downs[0][1].flops(shapes[0]) / 2)


def test_sparse_dwconv_modes_agree():
    """The four ways eval computes the depth-wise convolution of a token subset ('fused',
    default: at the kept positions only, compiled; 'gather': the same as an eager loop; 'map':
    channels-last full map; 'core': the core MixFFN's index path) give the same outputs, on odd
    map sizes, with per-image decisions and padding slots (images keep different counts); the
    FLOPs do not depend on the mode."""
    torch.manual_seed(4)
    ms = {mode: tiny(out_nodes='last', sparse_dwconv=mode)
          for mode in ('map', 'gather', 'fused', 'core')}
    assert tiny().sparse_dwconv == 'fused'
    for m in ms.values():
        m.load_state_dict(ms['core'].state_dict())
    img = (57, 83)
    shapes = ms['core'].scale_shapes(img)
    g = torch.Generator().manual_seed(5)
    fixed = {}
    for i, hw in enumerate(shapes):
        for j in range(4):
            fixed[('row', i, j)] = (torch.rand(2, hw[0] * hw[1], generator=g) < 0.4).float()
        if i < 3:
            for j in range(5):
                fixed[('col', i, j)] = (torch.rand(2, generator=g) < 0.7).float()
    x = torch.randn(2, 3, *img)
    outs = {}
    for mode, m in ms.items():
        m.set_decision_override(dict(decisions=fixed))
        outs[mode] = m(x)
    for mode in ('map', 'gather', 'fused'):
        for a, b in zip(outs[mode], outs['core']):
            assert (a - b).abs().max() <= 1e-5
            assert a.abs().max() > 0
        assert torch.equal(ms[mode].last_flops, ms['core'].last_flops)
    with pytest.raises(ValueError, match='sparse_dwconv'):
        tiny(sparse_dwconv='conv')


def test_one_decision_rule_ranks_the_overrides():
    """``_rules`` is the one place that ranks force_full > the override's decisions > its
    keep_ratio > routing; the row / column decisions and the pruning follow it."""
    m = tiny(routing='pvt', decision_override=dict(keep_ratio=0.5, columns='all'))
    assert m._rules() == ('forced', 'on')
    x = torch.randn(2, 10, 8)
    assert torch.equal(m._row_decision(0, 0, x, (2, 5))[0],
                       m.forced_row_mask(10).float())
    assert m._col_decision(0, 3, x).tolist() == [1., 1.]
    assert all(all(r) for r in m._needed())        # every column may run: nothing pruned
    fixed = {('row', 0, 0): torch.tensor([[1., 0.] * 5] * 2), ('col', 0, 3): torch.tensor([0., 1.])}
    m.set_decision_override(dict(keep_ratio=0.5, columns='all', decisions=fixed))
    assert m._rules() == ('fixed', 'fixed') and m._imposed()
    assert torch.equal(m._row_decision(0, 0, x, (2, 5)), fixed[('row', 0, 0)])
    assert m._col_decision(0, 3, x).tolist() == [0., 1.]
    assert not all(all(r) for r in m._needed())    # imposed decisions pruned as 'pvt' would be
    m.force_full = True
    assert m._rules() == ('on', 'on')
    assert m._row_decision(0, 0, x, (2, 5)).sum() == 20
    m.force_full = False
    m.set_decision_override(None)
    assert m._rules() == ('on', 'pvt') and not m._imposed()
    assert m._col_decision(0, 3, x).tolist() == [0., 0.]   # P[0][3] is off the PVTv2 path
    assert m._col_decision(0, 1, x).tolist() == [1., 1.]


def test_node_input_and_accounts_alone():
    """The routing and accounting pieces of the forward, by hand: a node's value and reach
    from its two inputs (Eq. 4), and the records of one row stage and one column path."""
    from mmdyn.models.backbones.dit import _Accounts, _node_input
    v1, v2 = torch.ones(2, 3, 4), 2 * torch.ones(2, 3, 4)
    a1, a2 = torch.tensor([1., 0.]), torch.tensor([0., 1.])
    assert _node_input(None, None) is None
    assert _node_input((v1, a1), None)[1] is a1 and _node_input(None, (v2, a2))[0] is v2
    f, a = _node_input((v1, a1), (v2, a2))
    assert torch.equal(f, 3 * torch.ones(2, 3, 4)) and a.tolist() == [1., 1.]
    m = tiny(decision_override=dict(keep_ratio=0.5))
    costs = m._costs(IMG)
    hw = costs['shapes'][1]
    n = hw[0] * hw[1]
    acc = _Accounts(m, torch.zeros(2, 5, 8), costs)
    acc.reach(1, 0, torch.tensor([1., 0.]))
    g = torch.zeros(2, n)
    g[0, :3] = 1
    acc.row(1, 0, hw, g, torch.tensor([1., 0.]))
    acc.col(1, 0, torch.tensor([0., 0.]), torch.tensor([1., 0.]))
    blk = sum(float(b.flops(3, hw)) for b in m.stages[1][0])
    assert acc.flops.tolist() == [costs['stem'] + blk, costs['stem']]
    assert acc.exp_cost.tolist() == pytest.approx(
        [costs['stem'] + 3 / n * costs['row'][1][0], costs['stem']])
    assert acc.kept_tok.tolist() == [3., 0.]
    assert acc.vparams.tolist() == [nparams(m.stem) + nparams(m.stages[1][0]), nparams(m.stem)]
    assert acc.reached[:, 1, 0].tolist() == [True, False]


def test_pvt_column_rule_compiles_with_symbolic_indices():
    """Under ``torch.compile`` a graph break makes the grid's loop indices symbolic; the
    PVTv2-path column rule then still lowers in inductor (a float of the symbolic ``j == i +
    1`` did not) and gives 1 on the staircase, 0 off it."""
    m = tiny()
    m.set_decision_override(dict(keep_ratio=0.5, columns='pvt'))

    def f(x, i, j):
        return x.sum() * m._col_decision(i, j, x)

    compiled = torch.compile(f, dynamic=True, fullgraph=True)
    x = torch.randn(2, 5, 4)
    for i, j, on in ((0, 1, True), (0, 2, False), (1, 2, True)):
        out = compiled(x, i, j)
        torch.testing.assert_close(out, f(x, i, j))
        assert out.tolist() == ([pytest.approx(float(x.sum()), rel=1e-5)] * 2 if on else [0, 0])
