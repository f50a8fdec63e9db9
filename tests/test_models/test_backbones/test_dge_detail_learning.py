"""Accuracy per FLOP: on scenes whose detail is localised, DGE beats the equally cheap static
host on a smaller input.

The protocol is :mod:`mmdyn.analysis.learning.dge` on ``scene='detail'``
(:func:`mmdyn.analysis.learning.common.detail_scene`: 2-4 small objects on a flat background,
their class given only by a texture at half the sampling rate, which an anti-aliased smaller
input cannot resolve). The static PVT warms up, DGE (gamma 0.2) fine-tunes from its weights, and
the same PVT on the input size whose FLOPs are closest to DGE's realised FLOPs trains as many
iterations in all; both are scored by mIoU at the full 64x64 resolution.

The test runs the shortened recipe (300 warm-up + 150 DGE iterations; static: 450), about a
third of the tool's. Measured with it over seeds 0-4 (one thread, 64 validation scenes):
DGE mIoU 0.73-0.82 against 0.25-0.27 for the static host on a 40x48 or 32x56 input (difference
0.47-0.57), realised FLOPs 0.42-0.43 of the full-size host and 0.96-0.98 of the smaller-input
host's, fine queries on objects 0.10-0.31 against 0.009-0.07 on the background (4.4x-11x).
With the tool's recipe (800 + 400; docs/learning_checks.md) the difference is 0.35-0.45 in 5 of
5 seeds. The margins sit well below the worst seed measured.
"""
import pytest

from mmdyn.analysis.learning import dge as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

#: below the worst seed measured (0.43 of the full-size host's FLOPs)
MAX_FLOPS_RATIO = 0.5
#: below the smallest difference measured (0.47 mIoU)
MARGIN = 0.25


def test_dge_beats_smaller_input_host_on_localised_detail():
    r = protocol.run(seed=0, data=protocol.make_data('detail'), scene='detail', warmup=300,
                     iters=150)
    (p, ) = r['points']
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()})
    # the two points are equally cheap (realised FLOPs of DGE, static FLOPs of the host)
    assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
    assert p['flops_ratio'] < MAX_FLOPS_RATIO, p
    # compute follows the objects ...
    assert p['fine_on_shapes'] > 2 * p['fine_on_background'], p
    # ... and buys accuracy: the smaller input cannot tell the classes apart
    assert p['miou'] > p['static_miou'] + MARGIN, p
