"""DiT's routing learns where the image needs compute and buys accuracy per FLOP.

The protocol is :mod:`mmdyn.analysis.learning.dit` on ``scene='detail'``
(:func:`mmdyn.analysis.learning.common.detail_scene`: 2-4 small objects on a flat background,
their class given only by a texture at half the sampling rate, which an anti-aliased smaller
input cannot resolve). A two-scale static PVTv2 warms up (600 iterations), its weights are
tiled into a DiT grid that starts on the PVTv2 path (the gates off it closed) and fine-tunes 300
iterations with the budget loss (target 0.6 of the host's FLOPs, lambda 10), and the same PVTv2
on the input size whose FLOPs are closest to DiT's realised FLOPs trains 900 iterations; both
are scored by mIoU at the full 64x64 resolution, averaged over 64 validation scenes.

This is the tool's recipe (``learning_check.py dit --scene detail``). Measured over seeds 0-4
(one thread; docs/learning_checks.md): routed share on objects 0.20-0.26 against 0.016-0.12 on
the background (7.7x-14x, seed 3 1.7x), realised FLOPs 0.56-0.71 of the host, DiT's mIoU minus
the smaller-input host's (at 0.96-1.03 of DiT's FLOPs) +0.12 to +0.52 (5 of 5). A recipe half
as long lost to the smaller-input host in seed 3 (-0.14), so the test keeps the full one. The
test runs seed 0 with margins below the worst seed measured. About 30 s of CPU on one thread.
"""
import pytest

from mmdyn.analysis.learning import dit as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

#: above the worst seed measured (0.71 of the host's FLOPs; target 0.6)
MAX_FLOPS_RATIO = 0.75
#: below the smallest ratio measured (1.7x, seed 3; the others 7.7x-14x)
ROUTED_RATIO = 1.4
#: below the smallest gain over the smaller-input host (+0.12 mIoU, seed 3)
STATIC_MARGIN = 0.05


def test_dit_routes_objects_and_beats_smaller_input_host():
    r = protocol.run(seed=0, data=protocol.make_data('detail'), scene='detail')
    (p, ) = r['points']
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()})
    # the two points are equally cheap (realised FLOPs of DiT, static FLOPs of the host)
    assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
    assert p['flops_ratio'] < MAX_FLOPS_RATIO, p
    # where compute goes: the row gates run the objects' tokens, skip the flat background's
    assert p['routed_on_shapes'] > ROUTED_RATIO * p['routed_on_background'], p
    # accuracy per FLOP: the smaller input finds the objects but cannot tell their classes
    assert p['miou'] > p['static_miou'] + STATIC_MARGIN, p
