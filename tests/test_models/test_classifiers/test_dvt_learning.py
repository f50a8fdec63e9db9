"""DVT learns where to spend compute (easy images leave at the first exit, hard ones go on) and
the cascade is about as accurate as an equally cheap static ViT, or better.

The protocol is :mod:`mmdyn.analysis.learning.dvt` (also run by
``tools/analysis_tools/learning_check.py dvt``): 48x48 images of one striped object (class =
stripe orientation and silhouette; the stripes are drawn in the object's own coordinates, so
they scale with it), half with a large object (readable on the first exit's 3x3 tokens), half
with a small one (its stripes are resolved only at full resolution). A tiny two-exit DVT (3x3
then 6x6 tokens, feature and relationship reuse) trains both exits jointly for 800 iterations;
the first exit's threshold is set so that the cascade's realised FLOPs equal those of a static
ViT with 4x4 tokens, trained as long. Nothing tells the model which images are easy: only its
first exit's confidence does.

The test trains longer than the tool's recipe: 1600 iterations instead of 800, at the cheaper
budget (4x4 tokens' FLOPs). It runs two seeds and asserts aggregates with margins. With 800
iterations, on the machine the recipe was made on (one thread, 512 validation images;
docs/learning_checks.md), seeds 0-4 all separated: AUC of the first exit's confidence, easy
against hard, 0.86-0.99; share leaving at exit 1, easy minus hard, 0.22-0.33; cascade accuracy
minus the static 4x4-token ViT's, +0.06 to +0.18. On a machine of another CPU kind
(2026-12-06), seeds 1 and 4 stayed on the initial plateau at 800 iterations (AUC 0.63 / 0.53):
how soon exit 1 leaves it depends on the trajectory. At 1200 iterations all five separated
there: AUC 0.77-1.00, easy minus hard 0.20-0.34, cascade accuracy 0.55-0.72. Against the static
ViT trained as long, the cascade's accuracy differed by -0.08 to +0.13 (mean +0.03; seeds 0 and 1:
+0.13 and -0.02). On a third CPU kind (AMD EPYC, 2026-12-06) seeds 3 and 4 were still near the
plateau at 1200 iterations (AUC 0.71 / 0.72, easy minus hard 0.09, the cascade 0.08-0.10 behind
the static ViT); at 1600 all five separated there: AUC 0.87-1.00, easy minus hard 0.24-0.34,
cascade accuracy 0.60-0.76, minus the static ViT's -0.02 to +0.11. Hence 1600. About 70 s of CPU
per seed on one thread there.
"""
import pytest

from mmdyn.analysis.learning import dvt as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

SEEDS = (0, 1)
ITERS = 1600
# measured over five seeds, "a / b": 1200 iterations on the second CPU kind / 1600 on AMD EPYC
AUC_MIN = 0.8  # mean over the seeds; measured 0.77-1.00 / 0.87-1.00
EXIT_MARGIN = 0.12  # each seed; measured 0.20-0.34 / 0.24-0.34
ACC_MIN = 0.45  # mean cascade accuracy; measured 0.55-0.72 / 0.60-0.76 (chance 0.25)
ACC_SLACK = 0.05  # mean cascade minus static above -ACC_SLACK; measured -0.08..+0.13 / -0.02..+0.11


def test_easy_images_leave_first_and_the_cascade_keeps_up_with_the_static_vit():
    points = [protocol.run(seed=s, targets=(4, ), iters=ITERS)['points'][0] for s in SEEDS]
    for p in points:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()})
        # the threshold meets the budget: the static 4x4-token ViT's FLOPs within 5 %
        assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
        # where compute goes: at this budget more easy images than hard ones leave at exit 1
        assert p['exit1_easy'] > p['exit1_hard'] + EXIT_MARGIN, p
    n = len(points)
    # the first exit is more confident on easy images (over all of them, whatever the threshold)
    assert sum(p['exit1_auc'] for p in points) / n > AUC_MIN, points
    # accuracy per FLOP: the cascade learned (well above chance) and is about as good as the
    # equally cheap static ViT trained as long, or better
    assert sum(p['acc'] for p in points) / n > ACC_MIN, points
    assert sum(p['acc'] - p['static_acc'] for p in points) / n > -ACC_SLACK, points
