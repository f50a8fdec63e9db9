import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.layers.region_pool import (multi_region_pool, region_grid, region_ids,
                                             region_pool, region_pool_tokens, region_unpool,
                                             region_unpool_tokens)


def _naive_pool(x, s):
    b, c, h, w = x.shape
    gh, gw = -(-h // s), -(-w // s)
    out = torch.empty(b, c, gh, gw, dtype=x.dtype)
    for i in range(gh):
        for j in range(gw):
            out[:, :, i, j] = x[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s].mean((-2, -1))
    return out


def _naive_unpool(r, s, h, w):
    out = torch.empty(r.shape[:-2] + (h, w), dtype=r.dtype)
    for y in range(h):
        for x in range(w):
            out[..., y, x] = r[..., y // s, x // s]
    return out


@pytest.mark.parametrize('hw', [(7, 10), (8, 8), (1, 1), (5, 3)])
@pytest.mark.parametrize('s', [1, 2, 3, 4, 9])
def test_pool_and_unpool_against_loops(hw, s):
    torch.manual_seed(0)
    h, w = hw
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    r = region_pool(x, s)
    assert r.shape == (2, 3) + region_grid(hw, s)
    assert torch.allclose(r, _naive_pool(x, s), atol=1e-12)
    u = region_unpool(r, s, hw)
    assert u.shape == (2, 3, h, w)
    assert torch.equal(u, _naive_unpool(r, s, h, w))


def test_divisible_equals_avg_pool_and_constant_is_kept():
    x = torch.randn(1, 4, 8, 12)
    assert torch.allclose(region_pool(x, 4), F.avg_pool2d(x, 4), atol=1e-6)
    # padding is not averaged in: a constant map pools to the same constant everywhere
    const = torch.full((1, 1, 7, 5), 3.0)
    assert torch.equal(region_pool(const, 4), torch.full((1, 1, 2, 2), 3.0))


def test_three_d_input_and_integer_unpool():
    x = torch.randn(2, 6, 7)
    assert torch.allclose(region_pool(x, 3), _naive_pool(x[:, None], 3)[:, 0], atol=1e-6)
    choice = torch.tensor([[[0, 2], [1, 0]]])
    u = region_unpool(choice, 2, (3, 4))
    assert u.dtype == torch.long
    assert torch.equal(u, torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 0, 0]]]))


def test_pool_gradient_is_one_over_real_count():
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    region_pool(x, 2).sum().backward()
    expect = torch.full((5, 5), 0.25)
    expect[4, :4] = 0.5
    expect[:4, 4] = 0.5
    expect[4, 4] = 1.0
    assert torch.allclose(x.grad[0, 0], expect)


def test_multi_region_pool():
    x = torch.randn(1, 2, 9, 6)
    outs = multi_region_pool(x, [1, 2, 4])
    assert [tuple(o.shape[-2:]) for o in outs] == [(9, 6), (5, 3), (3, 2)]
    for o, s in zip(outs, [1, 2, 4]):
        assert torch.allclose(o, _naive_pool(x, s), atol=1e-6)


def test_token_layout_matches_map_layout():
    torch.manual_seed(0)
    h, w, s = 5, 7, 2
    x = torch.randn(2, h * w, 3)
    r, grid = region_pool_tokens(x, (h, w), s)
    assert grid == (3, 4) and r.shape == (2, 12, 3)
    xm = x.transpose(1, 2).reshape(2, 3, h, w)
    assert torch.allclose(r, _naive_pool(xm, s).flatten(2).transpose(1, 2), atol=1e-6)
    u = region_unpool_tokens(r, s, (h, w))
    ref = _naive_unpool(r.transpose(1, 2).reshape(2, 3, 3, 4), s, h, w)
    assert torch.equal(u, ref.flatten(2).transpose(1, 2))


def test_region_ids():
    h, w, s = 5, 7, 3
    ids = region_ids((h, w), s)
    gw = region_grid((h, w), s)[1]
    ref = torch.tensor([(y // s) * gw + x // s for y in range(h) for x in range(w)])
    assert torch.equal(ids, ref)


def test_errors():
    x = torch.randn(1, 1, 4, 4)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match='region size'):
            region_pool(x, bad)
    with pytest.raises(ValueError, match='x must be'):
        region_pool(torch.randn(4, 4), 2)
    with pytest.raises(ValueError, match='floating point'):
        region_pool(torch.ones(1, 1, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match='r must be'):
        region_unpool(torch.randn(1, 1, 3, 3), 2, (4, 4))
    with pytest.raises(ValueError, match='x must be'):
        region_pool_tokens(torch.randn(1, 10, 3), (3, 3), 2)
    with pytest.raises(ValueError, match='sizes'):
        multi_region_pool(x, [])
