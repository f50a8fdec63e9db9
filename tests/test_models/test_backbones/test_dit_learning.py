"""DiT's routing learns where the image needs compute, at the budget, keeping the host's
accuracy.

The protocol is :mod:`mmdyn.analysis.learning.dit` on ``scene='detail'``
(:func:`mmdyn.analysis.learning.common.detail_scene`: 2-4 small objects on a flat background,
their class given only by a texture at half the sampling rate, which an anti-aliased smaller
input cannot resolve). A two-scale static PVTv2 warms up, its weights are tiled into a DiT grid
that starts on the PVTv2 path (the gates off it closed) and fine-tunes with the budget loss
(target 0.6 of the host's FLOPs, reached over the first half), and the same PVTv2 on the input
size whose FLOPs are closest to DiT's realised FLOPs trains as many iterations in all; both
are scored by mIoU at the full 64x64 resolution.

The test runs a shortened recipe (300 warm-up + 150 DiT iterations, static 450: half the
tool's). Measured with it over seeds 0-4 (one thread, 64 validation scenes, lambda 10):
routed share on objects 0.22-0.30 against 0.020-0.037 on the background (6.3x-14x), realised
FLOPs 0.56-0.60 of the host, the smaller-input host (40x64) at 0.98-1.04 of DiT's FLOPs; DiT's
mIoU minus its host's after the warm-up +0.03 to +0.18; minus the smaller-input host's +0.05
to +0.31 in 4 seeds and -0.14 in seed 3 (whose host reaches only 0.32 after 300 iterations),
so the accuracy-per-FLOP claim holds in 4 of 5 seeds with this recipe (5 of 5 with the tool's,
docs/learning_checks.md) and is asserted here only as a bound. With lambda 4 the shortened
fine-tune left the first stage's gate open in 2 of 4 seeds (FLOPs 0.72 and 0.85 of the host).
About 30 s of CPU on one thread.
"""
import pytest

from mmdyn.analysis.learning import dit as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

#: above the worst seed measured (0.60 of the host's FLOPs; target 0.6)
MAX_FLOPS_RATIO = 0.7
#: below the smallest ratio measured (6.3x)
ROUTED_RATIO = 3.0
#: below the smallest gain over the host after its warm-up (+0.03 mIoU)
HOST_MARGIN = -0.05
#: below the worst difference to the smaller-input host (-0.14 mIoU, seed 3)
STATIC_MARGIN = -0.2


def test_dit_routes_objects_at_the_budget():
    r = protocol.run(seed=0, data=protocol.make_data('detail'), scene='detail', warmup=300,
                     iters=150, lam=10.)
    (p, ) = r['points']
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()})
    # the two points are equally cheap (realised FLOPs of DiT, static FLOPs of the host)
    assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
    assert p['flops_ratio'] < MAX_FLOPS_RATIO, p
    # the row gates run the objects' tokens and skip the flat background's ...
    assert p['routed_on_shapes'] > ROUTED_RATIO * p['routed_on_background'], p
    # ... at no loss against the host, and not far from (mostly above) the smaller input
    assert p['miou'] > p['host_miou'] + HOST_MARGIN, p
    assert p['miou'] > p['static_miou'] + STATIC_MARGIN, p
