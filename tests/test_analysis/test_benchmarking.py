"""Operator dispatch counts: the counter, and what the shape-constant cache saves per forward."""
import torch

from mmdyn.analysis.benchmarking import count_dispatches
from mmdyn.models.backbones.dge import DGEPVT
from mmdyn.models.layers import shape_constants

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 2, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])


def test_count_dispatches_counts_operator_calls():
    x = torch.ones(3)
    assert count_dispatches(lambda: x + 1) == 1
    assert count_dispatches(lambda: (x + 1) * 2) == 2
    assert count_dispatches(lambda: None) == 0


class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Names of the operators a call dispatches."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_dge_builds_its_geometry_once_per_shape():
    """The second eval forward of a shape builds no index tensor (the region ids, extents,
    owner tables come from the cache), runs fewer operators than the first and gives the same
    output; a new shape builds its own."""
    model = DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.).eval()
    x = torch.randn(1, 3, 64, 96)
    shape_constants.clear()
    with torch.no_grad():
        first, second = _Ops(), _Ops()
        with first:
            a = model(x)
        with second:
            b = model(x)
        assert 'arange' in first.names and 'arange' not in second.names
        assert len(second.names) < len(first.names)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        third = _Ops()
        with third:
            model(torch.randn(1, 3, 96, 64))
        assert 'arange' in third.names
