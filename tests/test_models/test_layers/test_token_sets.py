import math

import pytest
import torch
import torch.nn as nn

from mmdyn.models.layers.token_sets import (gather_tokens, make_token_set, padded_attention,
                                            scatter_tokens, select_tokens)

C, HEADS = 8, 2


def _keep(b, n, counts, seed):
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(counts):
        keep[i, torch.randperm(n, generator=g)[:k]] = True
    return keep


def _naive_attention(q, k, v):
    """[h, Lq, d], [h, Lk, d] -> [h, Lq, d], written out by hand."""
    if k.shape[-2] == 0:
        return q.new_zeros(q.shape[:-1] + v.shape[-1:])
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


class _Block(nn.Module):
    """Attention of the kept tokens (queries) to a key set, residual, written back."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(C, C)
        self.kv = nn.Linear(C, 2 * C)
        self.proj = nn.Linear(C, C)

    def heads(self, t):  # [..., L, C] -> [..., h, L, d]
        return t.unflatten(-1, (HEADS, C // HEADS)).transpose(-3, -2)

    def merge(self, t):
        return t.transpose(-3, -2).flatten(-2)

    def batched(self, x, keep, kv_keep):
        qs, qset = select_tokens(x, keep)
        ks, kset = select_tokens(x, kv_keep)
        k, v = self.kv(ks).chunk(2, -1)
        out = padded_attention(self.heads(self.q(qs)), self.heads(k), self.heads(v),
                               key_mask=kset.mask, query_mask=qset.mask)
        return scatter_tokens(qs + self.proj(self.merge(out)), qset, x)

    def single(self, x, keep, kv_keep):
        """One image ``[N, C]`` alone, with only its kept tokens, no padding anywhere."""
        t = x[keep]
        k, v = self.kv(x[kv_keep]).chunk(2, -1)
        out = _naive_attention(self.heads(self.q(t)), self.heads(k), self.heads(v))
        y = x.clone()
        y[keep] = t + self.proj(self.merge(out))
        return y


def test_make_token_set_matches_nonzero():
    keep = _keep(4, 9, [3, 0, 9, 5], 0)
    ts = make_token_set(keep)
    assert ts.max_len == 9 and ts.num_tokens == 9
    assert torch.equal(ts.lengths, torch.tensor([3, 0, 9, 5]))
    for b in range(4):
        n = int(keep[b].sum())
        assert torch.equal(ts.index[b, :n], keep[b].nonzero().squeeze(1))  # stable order
        assert torch.equal(ts.mask[b], torch.arange(9) < n)
        # each row of index is a prefix of a permutation
        assert len(set(ts.index[b].tolist())) == 9
    ts_pad = make_token_set(keep[[0, 3]], pad_to=7)
    assert ts_pad.max_len == 7 and torch.equal(ts_pad.mask.sum(1), torch.tensor([3, 5]))
    assert make_token_set(keep[[0, 3]]).max_len == 5


def test_gather_and_scatter_against_loops():
    torch.manual_seed(0)
    keep = _keep(3, 10, [4, 10, 1], 1)
    x = torch.randn(3, 10, 2, 3)  # any trailing dims
    ts = make_token_set(keep)
    g = gather_tokens(x, ts)
    assert g.shape == (3, 10, 2, 3)
    for b in range(3):
        n = int(keep[b].sum())
        assert torch.equal(g[b, :n], x[b][keep[b]])
        assert torch.equal(g[b, n:], torch.zeros_like(g[b, n:]))
    vals = torch.randn(3, 10, 2, 3)
    base = torch.randn(3, 10, 2, 3)
    out = scatter_tokens(vals, ts, base)
    added = scatter_tokens(vals, ts, base, mode='add')
    for b in range(3):
        n = int(keep[b].sum())
        ref = base[b].clone()
        ref[keep[b]] = vals[b, :n]
        assert torch.equal(out[b], ref)
        ref = base[b].clone()
        ref[keep[b]] += vals[b, :n]
        assert torch.allclose(added[b], ref)


@pytest.mark.parametrize('layout', ['contiguous', 'transposed', 'broadcast', 'one image',
                                    'scalars', 'trailing dims'])
def test_gather_reads_rows_as_the_element_gather(layout):
    """The row gather over the flattened batch equals ``x.gather`` with the index expanded
    (values and gradients) for every layout a caller passes."""
    torch.manual_seed(0)
    b = 1 if layout == 'one image' else 3
    keep = _keep(b, 10, [4, 10, 1][:b], 1)
    ts = make_token_set(keep)
    base = torch.randn(b, 10, 5, requires_grad=True)
    x = {'transposed': lambda: base.transpose(1, 2).contiguous().transpose(1, 2),
         'broadcast': lambda: base[:1].expand(b, -1, -1),
         'scalars': lambda: base[..., 0],
         'trailing dims': lambda: base.view(b, 10, 5, 1)}.get(layout, lambda: base)()
    ref = x.gather(1, ts.index.view(*ts.index.shape, *([1] * (x.dim() - 2))).expand(
        *ts.index.shape, *x.shape[2:]))
    ref = ref.masked_fill(~ts.mask.view(*ts.mask.shape, *([1] * (x.dim() - 2))), 0)
    out = gather_tokens(x, ts)
    assert out.shape == ref.shape and torch.equal(out, ref)
    w = torch.randn(out.shape)
    g_out, = torch.autograd.grad((out * w).sum(), base)
    g_ref, = torch.autograd.grad((ref * w).sum(), base)
    assert torch.equal(g_out, g_ref)


def test_scatter_gradients():
    keep = torch.tensor([[True, False, True, False], [False, False, False, True]])
    ts = make_token_set(keep)
    vals = torch.randn(2, 2, 3, requires_grad=True)
    base = torch.randn(2, 4, 3, requires_grad=True)
    scatter_tokens(vals, ts, base).sum().backward()
    assert torch.equal(base.grad[..., 0], (~keep).float())
    assert torch.equal(vals.grad[..., 0], ts.mask.float())


@pytest.mark.parametrize('counts', [[5], [3, 12], [0, 7, 12, 1, 4]])
@pytest.mark.parametrize('cross', [False, True])
def test_padded_batch_equals_per_image(counts, cross):
    torch.manual_seed(len(counts))
    b, n = len(counts), 12
    block = _Block()
    x = torch.randn(b, n, C, requires_grad=True)
    keep = _keep(b, n, counts, 2)
    kv_keep = _keep(b, n, counts[::-1], 3) if cross else keep
    out = block.batched(x, keep, kv_keep)
    (gx, ) = torch.autograd.grad((out * torch.arange(C)).sum(), x)
    assert out.shape == (b, n, C) and not torch.isnan(gx).any()
    for i in range(b):
        xi = x[i].detach().clone().requires_grad_()
        ref = block.single(xi, keep[i], kv_keep[i])
        assert (out[i] - ref).abs().max() <= 1e-5
        (gi, ) = torch.autograd.grad((ref * torch.arange(C)).sum(), xi)
        assert (gx[i] - gi).abs().max() <= 1e-5


def test_all_empty_and_all_full_sets():
    torch.manual_seed(0)
    block = _Block()
    x = torch.randn(3, 6, C, requires_grad=True)
    none = torch.zeros(3, 6, dtype=torch.bool)
    out = block.batched(x, none, none)
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # every parameter stays in the graph (zero gradient), as DDP wants
    assert all(p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
               for p in block.parameters())
    # full sets: plain attention over all tokens
    full = torch.ones(3, 6, dtype=torch.bool)
    out = block.batched(x, full, full)
    ref = torch.stack([block.single(x[i], full[i], full[i]) for i in range(3)])
    assert (out - ref).abs().max() <= 1e-5


def test_padded_attention_fully_masked_rows():
    torch.manual_seed(0)
    q = torch.randn(2, HEADS, 3, 4, requires_grad=True)
    k = torch.randn(2, HEADS, 5, 4, requires_grad=True)
    v = torch.randn(2, HEADS, 5, 4, requires_grad=True)
    key_mask = torch.tensor([[False] * 5, [True, True, False, False, False]])
    query_mask = torch.tensor([[True, True, True], [True, False, True]])
    out = padded_attention(q, k, v, key_mask, query_mask)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(out[1, :, 1], torch.zeros_like(out[1, :, 1]))
    ref = _naive_attention(q[1], k[1, :, :2], v[1, :, :2])
    assert torch.allclose(out[1, :, [0, 2]], ref[:, [0, 2]], atol=1e-6)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(v.grad[0], torch.zeros_like(v.grad[0]))
    assert torch.equal(v.grad[1, :, 2:], torch.zeros_like(v.grad[1, :, 2:]))
    # 3-D layout, no masks: plain softmax attention
    q3, k3, v3 = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    out3 = padded_attention(q3, k3, v3)
    assert out3.shape == (2, 3, 6)
    assert torch.allclose(out3, _naive_attention(q3, k3, v3), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match='keep must be'):
        make_token_set(torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match='pad_to'):
        make_token_set(torch.ones(2, 5, dtype=torch.bool), pad_to=6)
    ts = make_token_set(torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match='x must be'):
        gather_tokens(torch.randn(2, 4, 3), ts)
    with pytest.raises(ValueError, match='values must be'):
        scatter_tokens(torch.randn(2, 4, 3), ts, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match='mode'):
        scatter_tokens(torch.randn(2, 5, 3), ts, torch.randn(2, 5, 3), mode='max')
    with pytest.raises(ValueError, match='key_mask'):
        padded_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4),
                         key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='3-D or 4-D'):
        padded_attention(torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4))


@pytest.mark.parametrize('counts, padded', [((3, 3, 3), False), ((1, 4, 2), True), ((5, ), False),
                                             ((0, 0), False)])
def test_equal_counts_make_an_unpadded_set_with_the_same_results(counts, padded):
    """Equal kept counts: no padding slot, no mask (``key_padding_mask`` None), and gather /
    scatter give what the masked path gives."""
    n = 6
    keep = _keep(len(counts), n, counts, seed=3)
    ts = make_token_set(keep)
    assert ts.padded is padded
    assert (ts.key_padding_mask is None) is (not padded)
    if padded:
        assert torch.equal(ts.key_padding_mask, ~ts.mask)
    x = torch.randn(len(counts), n, C)
    masked = ts._replace(padded=True)  # the same set through the masking code
    assert torch.equal(gather_tokens(x, ts), gather_tokens(x, masked))
    vals = torch.randn(len(counts), ts.max_len, C)
    for mode in ('replace', 'add'):
        assert torch.equal(scatter_tokens(vals, ts, x, mode), scatter_tokens(vals, masked, x, mode))
    # and both equal the per-image reference
    for i, k in enumerate(counts):
        idx = keep[i].nonzero().squeeze(1)
        assert torch.equal(gather_tokens(x, ts)[i, :k], x[i, idx])


def test_a_given_padded_length_keeps_the_mask():
    keep = _keep(2, 6, (3, 3), seed=4)
    ts = make_token_set(keep, pad_to=6)
    assert ts.padded and ts.mask.sum().item() == 6
