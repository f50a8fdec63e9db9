"""The per-shape constant cache of the dynamic layers (region ids, extents, token positions)."""
import pytest
import torch

from mmdyn.models.layers import region_extents, region_ids
from mmdyn.models.layers import shape_constants as sc
from mmdyn.models.layers.deformable_attention import token_reference_points


def test_cached_values_equal_a_fresh_build_and_are_shared():
    sc.clear()
    for hw, size in [((6, 10), 4), ((7, 5), 2), ((4, 4), None)]:
        a = region_ids(hw, size)
        assert torch.equal(a, region_ids.uncached(hw, size))
        # same object for the same shape however the arguments are spelled
        assert region_ids(list(hw), size, device='cpu') is a
        assert region_ids(hw, size, torch.device('cpu')) is a
        rows, cols = region_extents(hw, size)
        ref_rows, ref_cols = region_extents.uncached(hw, size)
        assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    p = token_reference_points((3, 5))
    assert p.shape == (15, 2) and torch.equal(p[7], torch.tensor([2., 1.]))
    # another shape, another tensor
    assert region_ids((6, 10), 2) is not region_ids((6, 10), 4)


def test_invalid_arguments_still_raise_after_a_valid_call_with_an_equal_key():
    region_ids((4, 4), 1)
    with pytest.raises(ValueError, match='region size'):
        region_ids((4, 4), True)  # True == 1 as a dict key; its type keeps it apart
    with pytest.raises(ValueError, match='region size'):
        region_ids((4, 4), 1.0)


def test_made_under_inference_mode_then_used_in_training():
    sc.clear()
    with torch.inference_mode():
        ids = region_ids((4, 6), 2)
    assert not ids.is_inference()
    x = torch.randn(2, 6, 3, requires_grad=True)  # [B, regions, C]
    y = x.index_select(1, ids)  # saves the index for backward: an inference tensor would fail
    y.sum().backward()
    assert torch.equal(x.grad[0, :, 0], torch.bincount(ids, minlength=6).float())


def test_least_recently_used_entries_are_dropped(monkeypatch):
    sc.clear()
    monkeypatch.setattr(sc, 'MAX_ENTRIES', 2)
    a = region_ids((2, 2), 1)
    region_ids((3, 3), 1)
    assert region_ids((2, 2), 1) is a  # used again: now the most recent
    region_ids((5, 5), 1)  # drops (3, 3)
    assert len(sc._STORE) == 2 and region_ids((2, 2), 1) is a


def test_a_builder_without_device_argument_is_refused():
    with pytest.raises(TypeError, match='no device argument'):
        sc.shape_constant(lambda hw: torch.zeros(hw))


def test_fake_tensor_tracing_neither_reads_nor_fills_the_cache():
    """Under a fake-tensor mode (torch.compile / export tracing) the builders run without the
    cache: a fake value is never stored, and a later eager call gets a real tensor."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    sc.clear()
    with FakeTensorMode():
        fake = region_ids((5, 6), 2, 'cpu')
    assert type(fake) is not torch.Tensor and len(sc._STORE) == 0
    real = region_ids((5, 6), 2, 'cpu')
    assert type(real) is torch.Tensor and torch.equal(real, region_ids.uncached((5, 6), 2))


def test_integer_like_sizes_share_the_key_of_the_int():
    import numpy as np
    a = region_ids((5, 6), 2)
    assert region_ids((np.int64(5), 6), 2) is a
    assert region_ids((torch.tensor(5), torch.tensor(6)), 2) is a
    with pytest.raises(TypeError, match='tensor arguments'):
        region_ids((torch.tensor(5.), 6), 2)


def test_wrong_calls_raise_as_the_builder_would():
    with pytest.raises(TypeError):
        region_ids((4, 4))  # a required argument missing
    with pytest.raises(TypeError):
        region_ids((4, 4), 2, 'cpu', 1)  # one too many
    with pytest.raises(TypeError):
        region_ids((4, 4), 2, colour='red')
    with pytest.raises(TypeError):
        region_ids((4, 4), 2, hw_shape=(4, 4))  # given twice
    # keywords in any order: the key of the positional call
    a = region_ids((4, 6), 2, 'cpu')
    assert region_ids(device='cpu', size=2, hw_shape=(4, 6)) is a


def test_lookup_under_torch_compile_builds_afresh():
    """Inside a compiled function the builder runs (traced), the cache is not read: the
    compiled result equals the eager one and nothing fake was stored."""
    sc.clear()

    def f(x):
        return x + region_ids((4, 6), 2, 'cpu')

    x = torch.zeros(24, dtype=torch.long)
    out = torch.compile(f, backend='eager', fullgraph=True)(x)
    assert all(type(v) is torch.Tensor for v in sc._STORE.values())
    assert torch.equal(out, region_ids.uncached((4, 6), 2))
