import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.layers.region_pool import (region_extents, region_grid, region_ids,
                                             region_pool, region_pool_tokens)


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
    # un-pooling: gather the region values with the region index of every pixel
    u = r.flatten(2)[..., region_ids(hw, s)].reshape(2, 3, h, w)
    assert torch.equal(u, _naive_unpool(r, s, h, w))
    rows, cols = region_extents(hw, s)
    ones = torch.ones(1, 1, h, w, dtype=torch.float64)
    want = F.avg_pool2d(F.pad(ones, (0, (-w) % s, 0, (-h) % s)), s, s, divisor_override=1)
    assert torch.equal((rows[:, None] * cols[None, :]).double(), want[0, 0])  # real pixels


def test_divisible_equals_avg_pool_and_constant_is_kept():
    x = torch.randn(1, 4, 8, 12)
    assert torch.allclose(region_pool(x, 4), F.avg_pool2d(x, 4), atol=1e-6)
    # padding is not averaged in: a constant map pools to the same constant everywhere
    const = torch.full((1, 1, 7, 5), 3.0)
    assert torch.equal(region_pool(const, 4), torch.full((1, 1, 2, 2), 3.0))


def test_three_d_input_and_integer_unpool():
    x = torch.randn(2, 6, 7)
    assert torch.allclose(region_pool(x, 3), _naive_pool(x[:, None], 3)[:, 0], atol=1e-6)
    choice = torch.tensor([[0, 2, 1, 0]])  # a 2x2 region grid, row-major
    u = choice[:, region_ids((3, 4), 2)].reshape(1, 3, 4)
    assert u.dtype == torch.long
    assert torch.equal(u, torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 0, 0]]]))


def test_one_region_covers_the_map():
    assert region_grid((5, 7), None) == (1, 1)
    rows, cols = region_extents((5, 7), None)
    assert rows.tolist() == [5] and cols.tolist() == [7]
    assert torch.equal(region_ids((5, 7), None), torch.zeros(35, dtype=torch.long))


def test_pool_gradient_is_one_over_real_count():
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    region_pool(x, 2).sum().backward()
    expect = torch.full((5, 5), 0.25)
    expect[4, :4] = 0.5
    expect[:4, 4] = 0.5
    expect[4, 4] = 1.0
    assert torch.allclose(x.grad[0, 0], expect)


@pytest.mark.parametrize('b', [1, 2])
@pytest.mark.parametrize('hw', [(5, 7), (8, 12)])
def test_token_layout_matches_map_layout(hw, b):
    torch.manual_seed(0)
    (h, w), s = hw, 2
    x = torch.randn(b, h * w, 3)
    r = region_pool_tokens(x, (h, w), s)
    grid = region_grid((h, w), s)
    assert r.shape == (b, ) + grid + (3, ) and r.is_contiguous()
    xm = x.transpose(1, 2).reshape(b, 3, h, w)
    assert torch.allclose(r, _naive_pool(xm, s).permute(0, 2, 3, 1), atol=1e-6)
    if h % 4 == 0 and w % 4 == 0:  # pooled once more from the map pooled at 2
        r4 = region_pool_tokens(r, (h, w), 4, factor=2)
        assert r4.is_contiguous()
        assert torch.allclose(r4, _naive_pool(xm, 4).permute(0, 2, 3, 1), atol=1e-6)
    else:
        with pytest.raises(ValueError, match='divides'):
            region_pool_tokens(r, (h, w), 4, factor=2)


def test_region_ids():
    h, w, s = 5, 7, 3
    ids = region_ids((h, w), s)
    ref = torch.tensor([(y // s) * 3 + x // s for y in range(h) for x in range(w)])
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
    with pytest.raises(ValueError, match='x must be'):
        region_pool_tokens(torch.randn(1, 10, 3), (3, 3), 2)
    with pytest.raises(ValueError, match='region size'):
        region_pool(x, None)
