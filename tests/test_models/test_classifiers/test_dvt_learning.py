"""DVT learns where to spend compute (easy images leave at the first exit, hard ones go on) and
the cascade beats an equally cheap static ViT.

The protocol is :mod:`mmdyn.analysis.learning.dvt` (also run by
``tools/analysis_tools/learning_check.py dvt``): 48x48 images of one striped object (class =
stripe orientation and silhouette; the stripes are drawn in the object's own coordinates, so
they scale with it), half with a large object (readable on the first exit's 3x3 tokens), half
with a small one (its stripes are resolved only at full resolution). A tiny two-exit DVT (3x3
then 6x6 tokens, feature and relationship reuse) trains both exits jointly for 800 iterations;
the first exit's threshold is set so that the cascade's realised FLOPs equal those of a static
ViT with 4x4 tokens, trained as long. Nothing tells the model which images are easy: only its
first exit's confidence does.

This is the tool's recipe at its cheaper budget. Measured over seeds 0-4 (one thread, 512
validation images; docs/learning_checks.md): AUC of the first exit's confidence, easy against
hard images, 0.86-0.99; share leaving at exit 1 at this budget, easy minus hard, 0.22-0.33;
cascade accuracy minus the static 4x4-token ViT's +0.06 to +0.18 (5 of 5). (A 450-iteration
recipe left seed 1 on the initial plateau: AUC 0.60.) The test runs seed 0 with margins below
the worst seed. About 45 s of CPU on one thread.

On a machine of another CPU kind (2026-12-06) seeds 1 and 4 stayed on the initial plateau at
800 iterations (AUC 0.63 / 0.53). Seed 0 separated there too, with wide margins: AUC
0.99, easy 1.00 against hard 0.66, cascade 0.66 against the static ViT's 0.55. See
docs/learning_checks.md: how soon exit 1 leaves the plateau depends on the trajectory.
"""
import pytest

from mmdyn.analysis.learning import dvt as protocol

pytestmark = pytest.mark.usefixtures('one_thread')

AUC_MIN = 0.75  # worst seed 0.861
EXIT_MARGIN = 0.1  # worst seed 0.222


def test_easy_images_leave_first_and_the_cascade_beats_the_static_vit():
    (p, ) = protocol.run(seed=0, targets=(4, ))['points']
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()})
    # the threshold meets the budget: the static 4x4-token ViT's FLOPs within 5 %
    assert abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05, p
    # where compute goes: the first exit is more confident on easy images (over all of them,
    # whatever the threshold), and at this budget more of them leave there
    assert p['exit1_auc'] > AUC_MIN, p
    assert p['exit1_easy'] > p['exit1_hard'] + EXIT_MARGIN, p
    # accuracy per FLOP: the cascade beats the equally cheap static ViT (worst seed +0.06)
    assert p['acc'] > p['static_acc'], p
