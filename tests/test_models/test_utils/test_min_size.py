"""Small and thin inputs to PVT-hosted backbones: padded to the smallest size every stage takes
(issue 19, item 1), with the FLOPs counted on what runs."""
import copy

import pytest
import torch

from mmdyn.models.backbones.dge import DGEPVT
from mmdyn.models.backbones.dit import DiT
from mmdyn.models.backbones.pvt import PVT, PVTv2
from mmdyn.models.utils.min_size import min_input_size, pad_to_min_size, padded_input_shape

pytestmark = pytest.mark.usefixtures('one_thread')

ARCH = dict(embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])


def build(cls):
    torch.manual_seed(0)
    m = cls(arch=copy.deepcopy(ARCH), drop_path_rate=0.)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('cls', [PVT, PVTv2, DGEPVT, DiT])
@pytest.mark.parametrize('hw', [(1, 1), (8, 8), (3, 200), (33, 5)])
def test_small_and_thin_inputs_run(cls, hw):
    m = build(cls)
    with torch.no_grad():
        outs = m(torch.rand(2, 3, *hw))
    ph, pw = padded_input_shape(m, hw)
    assert (ph, pw) == (max(hw[0], min_input_size(m)), max(hw[1], min_input_size(m)))
    assert all(o.shape[0] == 2 and o.shape[-2] >= 1 and o.shape[-1] >= 1 for o in outs)
    # the padded input is what ran: same outputs as padding by hand
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        a = m(x)
        b = m(torch.nn.functional.pad(x, (0, pw - hw[1], 0, ph - hw[0])))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_minimum_is_the_smallest_size_that_runs_and_large_inputs_are_untouched():
    m = build(PVT)
    n = min_input_size(m)
    # PVT v1, patches 4/2/2/2 and reductions 8/4/2/1: the first stage needs 8 tokens a side
    assert n == 32
    x = torch.rand(1, 3, 40, 48)
    assert pad_to_min_size(m, x) is x
    # without the padding, one pixel less fails inside torch (the sr convolution of stage 0)
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            _unpadded_forward(m, torch.rand(1, 3, n - 1, n))
    with torch.no_grad():
        _unpadded_forward(m, torch.rand(1, 3, n, n))


def _unpadded_forward(m, x):
    for st in m.stages:
        tokens, hw = st(x)
        x = tokens.transpose(1, 2).reshape(x.shape[0], -1, *hw)
    return x


@pytest.mark.parametrize('cls', [PVT, DGEPVT, DiT])
def test_flops_count_the_padded_input(cls):
    m = build(cls)
    assert m.static_flops((3, 3)) == m.static_flops(padded_input_shape(m, (3, 3))) > 0


def test_compiled_backbone_reuses_its_graph():
    """Under ``torch.compile`` the minimum size is a constant of the backbone, not a traced
    read of the cache: the second call at a size reuses the first call's graph (the cache
    filled while tracing made dynamo recompile), and a padded small input gives eager's
    outputs."""
    import torch._dynamo as dynamo
    m = build(PVTv2)
    dynamo.reset()
    try:
        compiled = torch.compile(m, backend='eager', dynamic=True)
        counts = []
        with torch.no_grad():
            for hw in ((64, 64), (64, 64), (20, 24), (20, 24)):
                x = torch.rand(1, 3, *hw)
                out = compiled(x)
                counts.append(dynamo.utils.counters['stats']['unique_graphs'])
                for u, v in zip(out, m(x)):
                    torch.testing.assert_close(u, v)
    finally:
        dynamo.reset()
    assert counts[1] == counts[0] and counts[3] == counts[2]
