"""MixFFN's token-subset path (``subset_plan`` / ``forward_subset``) against the dense MixFFN."""
import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.layers import ffn as ffn_module
from mmdyn.models.layers.ffn import MixFFN, fused_neighbour_dwconv, neighbour_dwconv

pytestmark = pytest.mark.usefixtures('one_thread')


def _dense_at(ffn, x_full, keep, hw):
    """Reference written out with the dense ops: fc1 on the whole map, hidden rows of the
    skipped tokens set to zero, an NCHW depth-wise ``F.conv2d``, act, fc2."""
    b, n, _ = x_full.shape
    h = ffn.relu(ffn.fc1(x_full)) * keep[..., None].to(x_full.dtype)
    m = h.transpose(1, 2).reshape(b, -1, *hw)
    m = F.conv2d(m, ffn.dwconv.weight, ffn.dwconv.bias, padding=ffn.kernel_size // 2,
                 groups=ffn.hidden_dims)
    return ffn.fc2(ffn.act(m.flatten(2).transpose(1, 2)))


def _subset(x_full, keep):
    """Padded batch of the kept tokens (positions ascending) and their index, -1 = padding."""
    b = x_full.shape[0]
    counts = keep.sum(1)
    l = int(counts.max()) if keep.numel() else 0
    index = torch.full((b, l), -1, dtype=torch.long)
    xs = torch.zeros(b, l, x_full.shape[2])
    for i in range(b):
        pos = keep[i].nonzero().flatten()
        index[i, :len(pos)] = pos
        xs[i, :len(pos)] = x_full[i, pos]
    return xs, index


@pytest.mark.parametrize('linear', [False, True])
@pytest.mark.parametrize('mode', ['gather', 'fused', 'map'])
@pytest.mark.parametrize('hw,fracs', [((5, 7), (0.0, 0.3)), ((6, 6), (1.0, 0.6)),
                                      ((9, 4), (0.5, 0.5)), ((3, 11), (1.0, 1.0)),
                                      ((4, 4), (0.0, 0.0)), ((1, 1), (1.0, 0.0))])
def test_forward_subset_equals_dense_at_kept_tokens(mode, hw, fracs, linear):
    torch.manual_seed(0)
    ffn = MixFFN(6, 10, linear=linear).eval()
    nn_ = hw[0] * hw[1]
    g = torch.Generator().manual_seed(hash((hw, fracs)) % 1000)
    keep = torch.stack([torch.randperm(nn_, generator=g) < round(f * nn_) for f in fracs])
    x_full = torch.randn(2, nn_, 6)
    xs, index = _subset(x_full, keep)
    plan = ffn.subset_plan(index, hw, mode=mode)
    with torch.no_grad():
        got = ffn.forward_subset(xs, plan=plan)
        want = _dense_at(ffn, x_full, keep, hw)
        core = ffn(xs, hw, index)   # the index= path places the same subset on a zero map
    assert got.shape == xs.shape
    for i in range(2):
        k = int(keep[i].sum())
        pos = index[i, :k]
        torch.testing.assert_close(got[i, :k], want[i, pos], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[i, :k], core[i, :k], rtol=1e-5, atol=1e-6)
    if keep.all():   # every token kept: the dense MixFFN itself
        torch.testing.assert_close(got, ffn(x_full, hw), rtol=1e-5, atol=1e-6)


def test_forward_subset_builds_its_plan_and_checks_it():
    torch.manual_seed(1)
    ffn = MixFFN(4, 8).eval()
    hw = (5, 5)
    keep = torch.rand(3, 25) < 0.5
    keep[:, 0] = True
    x_full = torch.randn(3, 25, 4)
    xs, index = _subset(x_full, keep)
    with torch.no_grad():
        a = ffn.forward_subset(xs, index, hw)
        b = ffn.forward_subset(xs, plan=ffn.subset_plan(index, hw))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match='needs .index. and .hw_shape.'):
        ffn.forward_subset(xs)
    with pytest.raises(ValueError, match='kernel'):
        MixFFN(4, 8, kernel_size=5).forward_subset(xs, plan=ffn.subset_plan(index, hw))
    with pytest.raises(ValueError, match='mode'):
        ffn.subset_plan(index, hw, mode='conv')
    with pytest.raises(ValueError, match='slots'):
        ffn.forward_subset(xs[:, :-1], plan=ffn.subset_plan(index, hw))


@pytest.mark.parametrize('mode', ['gather', 'fused', 'map'])
def test_one_plan_serves_several_ffns(mode):
    """A stage shares one plan (and, for 'map', its zero map) between its blocks: reusing it
    gives what a fresh plan gives, for another FFN and other values at the same tokens."""
    torch.manual_seed(2)
    ffns = [MixFFN(4, 8).eval() for _ in range(3)]
    hw = (6, 5)
    keep = torch.rand(2, 30) < 0.4
    keep[:, 3] = True
    keep[1, :20] = False
    xs, index = _subset(torch.randn(2, 30, 4), keep)
    shared = ffns[0].subset_plan(index, hw, mode=mode)
    with torch.no_grad():
        for ffn in ffns:
            x = torch.randn_like(xs)
            got = ffn.forward_subset(x, plan=shared)
            want = ffn.forward_subset(x, plan=ffn.subset_plan(index, hw, mode=mode))
            assert torch.equal(got[keep.sum(1) > 0], want[keep.sum(1) > 0])


def test_gather_plan_neighbours_by_hand():
    """A 3x3 map keeping positions 0, 1, 4 (corner, its right neighbour, the centre): each
    kept token's neighbours are the kept ones around it, everything else is the zero row."""
    ffn = MixFFN(2, 2)
    plan = ffn.subset_plan(torch.tensor([[0, 1, 4]]), (3, 3))
    z = 3  # the zero row
    want = torch.tensor([[z, z, z, z, 0, 1, z, z, 2],    # (0,0): centre self, right 1, SE 4
                         [z, z, z, 0, 1, z, z, 2, z],    # (0,1): W 0, self, S 4
                         [0, 1, z, z, 2, z, z, z, z]])   # (1,1): NW 0, N 1, self
    assert torch.equal(plan.nbr, want)


def test_gather_plan_neighbours_with_padding_by_hand():
    """Two images of a 2x3 map, the second with a padding slot: rows count over the flattened
    batch, a padding slot's neighbours are all the zero row, a position kept by the other
    image is not a neighbour."""
    ffn = MixFFN(2, 2)
    plan = ffn.subset_plan(torch.tensor([[0, 5], [1, -1]]), (2, 3))
    z = 4
    # image 0 keeps (0,0) and (1,2); image 1 keeps (0,1), which is (1,2)'s NW neighbour and
    # (1,2) its SE one, but in the other image: only the centres are found
    want = torch.tensor([[z, z, z, z, 0, z, z, z, z],    # image 0, (0,0)
                         [z, z, z, z, 1, z, z, z, z],    # image 0, (1,2)
                         [z, z, z, z, 2, z, z, z, z],    # image 1, (0,1)
                         [z, z, z, z, z, z, z, z, z]])   # image 1, padding
    assert torch.equal(plan.nbr, want)


def test_map_neighbours_table():
    """Every position's k x k neighbour positions (H*W outside the map, and a last row of H*W
    for padding), against a loop; made once per shape."""
    h, w, k = 3, 4, 5
    table = ffn_module.map_neighbours(h, w, k)
    assert table.shape == (h * w + 1, k * k)
    for y in range(h):
        for x in range(w):
            want = [(y + dy) * w + (x + dx) if 0 <= y + dy < h and 0 <= x + dx < w else h * w
                    for dy in range(-2, 3) for dx in range(-2, 3)]
            assert table[y * w + x].tolist() == want
    assert table[-1].tolist() == [h * w] * (k * k)
    assert ffn_module.map_neighbours(h, w, k) is table


def _rows(r=40, c=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(r, c, generator=g)
    nbr = torch.randint(0, r + 1, (r, k * k), generator=g)   # row r: the zero row
    return h, nbr, torch.randn(k * k, c, generator=g), torch.randn(c, generator=g)


def test_neighbour_dwconv_by_hand():
    """Each output row: bias + sum over the k*k offsets of weight[t] * the row nbr[:, t]
    (zero for the zero row), written out as a loop."""
    h, nbr, w, b = _rows()
    want = b.expand(h.shape[0], -1).clone()
    table = torch.cat([h, torch.zeros(1, h.shape[1])])
    for r in range(h.shape[0]):
        for t in range(nbr.shape[1]):
            want[r] += w[t] * table[nbr[r, t]]
    torch.testing.assert_close(neighbour_dwconv(h, nbr, w, b), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neighbour_dwconv(h, nbr, w, None), want - b, rtol=1e-5,
                               atol=1e-5)


def test_fused_runs_compiled_for_every_shape():
    """The compiled function runs (no fallback) and equals the expression for other row counts,
    widths and no bias; it steps aside (None) while autograd records or jit traces."""
    with torch.no_grad():
        for r, c, seed in ((40, 12, 0), (7, 5, 1), (64, 33, 2)):
            h, nbr, w, b = _rows(r, c, seed=seed)
            for bias in (b, None):
                got = fused_neighbour_dwconv(h, nbr, w, bias)
                assert ffn_module._Compiled.error is None
                torch.testing.assert_close(got, neighbour_dwconv(h, nbr, w, bias), rtol=1e-5,
                                           atol=1e-5)
    h, nbr, w, b = _rows()
    assert fused_neighbour_dwconv(h, nbr, w.requires_grad_(), b) is None
    with torch.no_grad():
        traced = {}

        def probe(x):
            traced['out'] = fused_neighbour_dwconv(x, nbr, w, b)
            return x + 1
        torch.jit.trace(probe, (h, ), check_trace=False)
    assert traced['out'] is None


def test_fused_stays_its_own_function_inside_an_outer_compile(monkeypatch):
    """Inside an outer ``torch.compile`` the fused convolution is not traced into the outer
    graph (there inductor made DiT's compiled forward 3.6x slower than eager): the process's
    compiled function runs, once per call, with the same values."""
    import torch._dynamo as dynamo
    h, nbr, w, b = _rows()
    with torch.no_grad():
        fused_neighbour_dwconv(h, nbr, w, b)  # the process's compiled function exists
        assert ffn_module._Compiled.error is None
        real, calls = ffn_module._Compiled.fn, []

        def spy(*args):
            calls.append(1)
            return real(*args)

        monkeypatch.setattr(ffn_module._Compiled, 'fn', spy)
        dynamo.reset()
        try:
            outer = torch.compile(lambda x: fused_neighbour_dwconv(x, nbr, w, b) * 2,
                                  backend='eager')
            got = [outer(h), outer(h + 1)]
        finally:
            dynamo.reset()
    assert len(calls) == 2
    torch.testing.assert_close(got[0], 2 * neighbour_dwconv(h, nbr, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], 2 * neighbour_dwconv(h + 1, nbr, w, b), rtol=1e-5,
                               atol=1e-5)


def test_fused_falls_back_to_gather_once_with_a_warning(monkeypatch):
    """Where inductor cannot compile (no C++ compiler, an unsupported device), 'fused' warns
    once and runs the eager 'gather' loop: the same outputs."""
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError('no compiler here')
        return run
    monkeypatch.setattr(ffn_module._Compiled, 'fn', None)
    monkeypatch.setattr(ffn_module._Compiled, 'error', None)
    monkeypatch.setattr(torch, 'compile', broken)
    torch.manual_seed(3)
    ffn = MixFFN(4, 8).eval()
    keep = torch.rand(2, 30) < 0.5
    keep[:, 0] = True
    xs, index = _subset(torch.randn(2, 30, 4), keep)
    with torch.no_grad():
        want = ffn.forward_subset(xs, plan=ffn.subset_plan(index, (5, 6), mode='gather'))
        with pytest.warns(RuntimeWarning, match="'fused' could not be compiled.*no compiler"):
            got = ffn.forward_subset(xs, plan=ffn.subset_plan(index, (5, 6), mode='fused'))
        assert ffn_module._Compiled.error.startswith('RuntimeError')
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('error')   # no second warning
            again = ffn.forward_subset(xs, plan=ffn.subset_plan(index, (5, 6), mode='fused'))
    assert torch.equal(got, want) and torch.equal(again, want)
