"""Operator dispatch counts (the counter, and what the shape-constant cache saves per forward)
and the rounds of the alternating timer."""
import pytest
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


def _fake_clock(monkeypatch, seconds_per_call):
    """Each call of a timed function advances a fake clock by its given seconds: the round
    logic is tested without timing anything."""
    from mmdyn.analysis import benchmarking
    now = [0.]
    monkeypatch.setattr(benchmarking.time, 'perf_counter', lambda: now[0])

    def fn(seconds):
        def call():
            now[0] += seconds
        return call
    return [fn(s) for s in seconds_per_call]


def test_alternating_times_runs_more_rounds_until_the_minimum_seconds(monkeypatch):
    from mmdyn.analysis.benchmarking import alternating_times
    fns = _fake_clock(monkeypatch, [0.01, 0.03])  # 0.04 s a round
    # no minimum: exactly the rounds asked for, per_round calls of each per round
    times = alternating_times(fns, rounds=3, per_round=2, warmup=1)
    assert [len(t) for t in times] == [6, 6]
    assert times[0] == pytest.approx([0.01] * 6) and times[1] == pytest.approx([0.03] * 6)
    # 0.5 s: the first round whose end reaches it is the 13th (12 x 0.04 = 0.48)
    times = alternating_times(fns, rounds=3, per_round=1, warmup=0, min_seconds=0.5)
    assert [len(t) for t in times] == [13, 13]
    # capped at max_rounds (default 10 x rounds), never below rounds
    assert len(alternating_times(fns, 3, 1, 0, min_seconds=100.)[0]) == 30
    assert len(alternating_times(fns, 3, 1, 0, min_seconds=100., max_rounds=5)[0]) == 5
    assert len(alternating_times(fns, 3, 1, 0, min_seconds=100., max_rounds=1)[0]) == 3
    # a minimum already reached by the rounds asked for adds none
    assert len(alternating_times(fns, 3, 1, 0, min_seconds=0.1)[0]) == 3
