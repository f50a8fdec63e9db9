"""Accuracy per FLOP: on scenes whose detail is localised, MSViT sends the objects fine, the
background coarse, and beats the equally cheap static ViT on a smaller input.

The protocol is :mod:`mmdyn.analysis.learning.msvit_detail` (``learning_check.py msvit --scene
detail``): 48x48 scenes of :func:`mmdyn.analysis.learning.common.detail_scene` (2-4 small
objects, their class given only by a texture at half the sampling rate, which a coarse token,
the 2x2 mean of its region, and an anti-aliased smaller input both flatten to one tone),
5 labels, mIoU at 48x48. A tiny MSViT (``S_f`` 4, ``S_c`` 8, 2 blocks) warms up with the gate
held, then trains the gate with the L0 loss; the same ViT on the input size whose FLOPs are
closest to MSViT's realised FLOPs trains as many steps in all. Every measure is the mean over
the validation snapshots of the last steps (decisions oscillate around the budget).

The test runs the tool's recipe (200 warm-up steps, 512 scenes) on seed 0 at one budget, g* 0.1,
with 450 gate steps instead of the tool's 300. 300 is where the gate just reaches its budget, so
a trajectory that runs a little slower has not: on a machine of another CPU kind (2026-12-06),
seed 0 ended at 300 steps with 0.29 of the background fine and 0.46 of the host's FLOPs (seeds
1-4 there: 0.07-0.12 and 0.29-0.33), and at 450 steps with 0.09 and 0.31. At 450 steps seeds 1-4
pass this test's assertions there too. Shorter recipes did not separate in every seed (150 +
250: seed 3 ended all fine, its network had not learned the textures in the warm-up, mIoU 0.41;
200 + 200: seed 0 objects 0.75 against background 0.59). Measured with the tool over seeds 0-4
at g* 0.1 (one thread, 64 validation scenes; docs/learning_checks.md): fine on object pixels
0.69-0.79 against 0.08-0.10 on the background (7.2x-8.8x), gate AUC 0.79-0.89 (0.47-0.53 at the
end of the warm-up), realised FLOPs 0.30-0.31 of the full-size host and 0.98-1.02 of the
smaller-input host's (20x48 or 28x36), mIoU 0.68-0.74 against 0.24-0.42 (difference 0.27-0.49).
The margins sit below the worst seed. About 40 s of CPU time on one thread.
"""
import pytest

from mmdyn.analysis.learning import msvit_detail as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

TARGET = 0.1
#: gate steps after the warm-up (the tool's recipe: 300, where the gate only just converges)
GATE_STEPS = 450
#: below the worst seed measured (0.31 of the full-size host's FLOPs)
MAX_FLOPS_RATIO = 0.45
#: below the smallest ratio measured (7.2x)
MIN_FINE_RATIO = 3.0
#: below the smallest gate AUC measured (0.79)
MIN_AUC = 0.7
#: below the smallest mIoU difference measured (0.27)
MARGIN = 0.15


def test_msvit_beats_smaller_input_host_on_localised_detail():
    r = protocol.run(seed=0, targets=(TARGET, ), iters=GATE_STEPS)
    (p, ) = r['points']
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()})
    # the two points are equally cheap (realised FLOPs of MSViT, static FLOPs of the host)
    assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
    assert p['gflops'] < MAX_FLOPS_RATIO * p['static_gflops'], p
    # compute follows the objects: the gate learned it (it starts fine everywhere) ...
    assert p['fine_on_objects_warmup'] == 1.0, p
    assert p['fine_on_objects'] > MIN_FINE_RATIO * p['fine_on_background'], p
    assert p['gate_auc'] > MIN_AUC, p
    # ... and buys accuracy: the smaller input cannot tell the classes apart
    assert p['miou'] > p['static_miou'] + MARGIN, p
