"""DoViT learns to stop the flat background early and keep the shapes running.

The protocol is :mod:`mmdyn.analysis.learning.dovit` (also run by
``tools/analysis_tools/learning_check.py dovit``): a tiny DoViT (4 blocks, decisions after blocks
1-3 with the paper's 1x1 auxiliary heads) learns 5-label segmentation of 48x48 generated scenes
for 600 iterations with the threshold at 1.0 (nothing stops), then 400 with xi = 0.95. Nothing
is told where the shapes are: a token stops when its auxiliary prediction is confident.

Measured over seeds 0-4 (docs/learning_checks.md): shape tokens still running after the
decisions 0.88-0.98 (mean over the three), background tokens 0.08-0.13; realised FLOPs 0.38-0.40
of the static host; mIoU 0.48-0.55. The test runs seed 0 with margins below the worst seed.
"""
from mmdyn.analysis.learning import dovit as protocol
from mmdyn.analysis.learning.common import num_threads


def test_background_tokens_stop_shape_tokens_run():
    with num_threads(1):  # as measured
        r = protocol.train_dynamic(seed=0, xi=0.95, val=protocol.make_data())
    print({k: round(v, 3) for k, v in r.items()})
    # stops are cumulative: the share still running never grows from one decision to the next
    for side in ('shapes', 'background'):
        run = [r[f'running_on_{side}_{k}'] for k in range(3)]
        assert run[0] >= run[1] >= run[2], (side, run)
    assert r['running_on_shapes'] > 0.8 and r['running_on_background'] < 0.3, r
    assert r['running_on_shapes'] > r['running_on_background'] + 0.5, r
    # the stopped tokens are skipped: well under the static host's compute ...
    assert r['gflops'] < 0.7 * r['static_gflops'], r
    # ... and it still segments (background everywhere: mIoU about 0.16)
    assert r['miou'] > 0.35, r
