"""DVT learning check: easy images leave at the first exit more often than hard ones, and
the cascade beats a static ViT with fewer tokens at the same average FLOPs.

Data (:func:`draw_item`): 48x48 images of one object on a nearly flat background (a colour,
a gentle ramp, weak noise); the label is the object's class, and every object of class ``c``,
easy or hard, has the silhouette ``SHAPES[c]`` *and* sinusoidal stripes at orientation
``c * 45`` degrees drawn in the object's own coordinates (``STRIPES`` periods across its
width, random phase, a random colour 35-70 grey levels above the background), so the stripes
scale with the object. Half the images are *easy* (half-size 0.28-0.36 of the side: stripes
3.8-4.9 px apart on the first exit's 24x24 input), half *hard* (half-size ``HARD_SCALE``:
stripes 1.9-2.7 px apart at full resolution, mostly averaged away at 24 or 32 px). So an easy
image is easy only because it needs fewer tokens; the rule that gives the label is the same
for both.

* Dynamic: a tiny two-exit DVT (32 dims, 2 blocks per exit, patch 8: a 3x3-token exit on the
  image resized to 24x24, then a 6x6-token exit with feature reuse, its MLPs scaled to
  ``FEATURE_REUSE_DIMS``, and relationship reuse), both exits trained jointly with the sum of
  their label-smoothed cross-entropies (Eq. 1); ``RECIPE``.
* Static: the same ViT at ``static_grid`` x ``static_grid`` tokens (the image resized to
  ``8 * static_grid``), trained for the same number of iterations with the same recipe.
* The first exit's threshold is set on the validation images so that the cascade's average
  realised FLOPs equal the static model's (the paper's budgeted setting: thresholds chosen for
  a FLOPs budget); the decisions and accuracy are then read at that threshold.
"""
import math
from typing import Dict, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .common import auc, matched_claims, num_threads

SIZE = 48
PATCH = 8
ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
GRIDS = (3, 6)
NUM_CLASSES = 4
EASY_SCALE = (0.28, 0.36)
HARD_SCALE = (0.07, 0.1)
STRIPES = 3.5
#: iterations, batch, peak lr (AdamW, linear warm-up then cosine to 0), label smoothing,
#: training images, reuse of the cascade
RECIPE = dict(iters=800, batch=64, lr=3e-3, warmup=50, smoothing=0.1, num_train=2048,
              feature_reuse=True, relation_reuse=True)
#: widths of the feature-reuse MLPs: the paper's 128 / 48 for 384-wide exits, scaled to 32
FEATURE_REUSE_DIMS = (16, 8)
DEFAULT_TARGETS = (4, 5)  # the static grids whose FLOPs set the cascade's budgets
#: what --targets may hold: (what it is, low, high, low open, high open, integers only)
TARGET_RANGE = ('the static grid side', 1, None, False, False, True)


def draw_item(rng: np.random.Generator, cls: int, easy: bool) -> np.ndarray:
    """One ``[SIZE, SIZE, 3]`` uint8 image of an object of class ``cls`` (module doc)."""
    from mmdyn.datasets.toy import SHAPES, _polygon
    base = rng.uniform(60, 200, size=3)
    g = np.linspace(-1, 1, SIZE, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * g[None, :] + np.sin(angle) * g[:, None])[..., None]
    img = base + ramp * rng.uniform(-20, 20, size=3) + rng.normal(0, 2.0, (SIZE, SIZE, 3))
    r = rng.uniform(*(EASY_SCALE if easy else HARD_SCALE)) * SIZE
    ry = r * rng.uniform(0.8, 1.25)
    cx, cy = rng.uniform(r + 1, SIZE - r - 1), rng.uniform(ry + 1, SIZE - ry - 1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(_polygon(SHAPES[cls], cx, cy, r, ry, rng)).astype(np.int32)], 1)
    mask = mask.astype(bool)
    # objects are brighter than the background (a random colour, 35-70 grey levels above)
    mean = np.clip(base + rng.uniform(35, 70, 3), 0, 205)
    # stripes drawn on the object: orientation by class, STRIPES periods across its width
    theta = np.pi * cls / NUM_CLASSES
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    u = ((x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)) * STRIPES / (2 * r)
    tex = np.sin(2 * np.pi * (u + rng.uniform()))[..., None]
    img[mask] = (mean + 50 * tex)[mask]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_split(rng: np.random.Generator, n: int):
    """``n`` images (half easy, half hard), labels and an ``easy`` flag."""
    labels = rng.integers(NUM_CLASSES, size=n)
    easy = np.arange(n) % 2 == 0
    imgs = [draw_item(rng, int(c), bool(e)) for c, e in zip(labels, easy)]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(labels), torch.from_numpy(easy)


def make_data(num_train: int = RECIPE['num_train'], num_val: int = 512):
    return (make_split(np.random.default_rng(1000), num_train),
            make_split(np.random.default_rng(2000), num_val))


def _fit(forward, params, data, seed, r):
    """AdamW (no weight decay), linear warm-up then cosine decay, label-smoothed
    cross-entropy summed over the outputs of ``forward``; random horizontal flips."""
    x, y, _ = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=r['lr'], weight_decay=0.)
    warm, total = r['warmup'], r['iters']

    def factor(i):
        if i < warm:
            return (i + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for _ in range(total):
        idx = torch.randint(0, len(x), (r['batch'], ), generator=gen)
        xb = x[idx]
        if torch.rand(1, generator=gen).item() < 0.5:
            xb = xb.flip(-1)
        loss = sum(F.cross_entropy(o, y[idx], label_smoothing=r['smoothing'])
                   for o in forward(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def build_cascade(r):
    from mmdyn.models.classifiers.dvt import DVTClassifier
    return DVTClassifier(arch=ARCH, exits=GRIDS, patch_size=PATCH, num_classes=NUM_CLASSES,
                         feature_reuse=r['feature_reuse'], relation_reuse=r['relation_reuse'],
                         feature_reuse_dims=FEATURE_REUSE_DIMS)


def train_cascade(train, seed: int, **kw):
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    m = build_cascade(r)
    m.init_weights()
    m.train()
    _fit(m.run_all, m.parameters(), train, seed, r)
    return m.eval()


def static_vit(grid: int):
    """The static ViT at ``grid x grid`` tokens: the first exit of a (grid, grid + 1) cascade
    without reuse (a one-exit cascade is not allowed)."""
    from mmdyn.models.classifiers.dvt import DVTClassifier
    m = DVTClassifier(arch=ARCH, exits=(grid, grid + 1), patch_size=PATCH,
                      num_classes=NUM_CLASSES, feature_reuse=False, relation_reuse=False)
    m.init_weights()
    return m.exits[0]


def train_static(train, grid: int, seed: int, **kw):
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    e = static_vit(grid)
    e.train()
    _fit(lambda xb: [e(xb)[0]], e.parameters(), train, seed, r)
    return e.eval()


def threshold_for_flops(conf: torch.Tensor, cum_flops: Sequence[float], budget: float) -> float:
    """The first exit's threshold whose average realised FLOPs on these confidences is closest
    to ``budget`` (an image stops at exit 1 when its confidence ``>= threshold``)."""
    c = conf.sort(descending=True).values.tolist()
    best = None
    for k in range(len(c) + 1):  # k images stop early
        flops = (k * cum_flops[0] + (len(c) - k) * cum_flops[1]) / len(c)
        if best is None or abs(flops - budget) < abs(best[1] - budget):
            th = 1.0 if k == 0 else (c[k - 1] + c[k]) / 2 if k < len(c) else 0.0
            best = (th, flops)
    return best[0]


def _point(m, outs, xv, yv, easy, budget):
    """Early exit at the threshold that meets ``budget`` (FLOPs per image) on ``xv``."""
    conf = outs[0].softmax(-1).max(-1).values
    m.set_thresholds([threshold_for_flops(conf, [float(f) for f in m.cumulative_flops()],
                                          budget)])
    with torch.no_grad():
        logits, ex, _ = m.early_exit(xv)
    first = (ex == 0).float()
    right = (logits.argmax(-1) == yv).float()
    return dict(exit1_easy=float(first[easy].mean()), exit1_hard=float(first[~easy].mean()),
                exit1_auc=auc(conf[easy], conf[~easy]),
                acc=float(right.mean()), acc_easy=float(right[easy].mean()),
                acc_hard=float(right[~easy].mean()),
                acc_exit1=float((outs[0].argmax(-1) == yv).float().mean()),
                acc_last=float((outs[1].argmax(-1) == yv).float().mean()),
                gflops=float(m.last_flops.double().mean()) / 1e9)


def run(seed: int = 0, targets: Sequence[int] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, **kw) -> Dict:
    train, val = data or make_data()
    xv, yv, easy = val
    points = []
    with num_threads(threads):
        m = train_cascade(train, seed, **kw)
        with torch.no_grad():
            outs = m.run_all(xv)
        for grid in targets:
            grid = int(grid)
            st = train_static(train, grid, seed, **kw) if static else static_vit(grid)
            point = dict(seed=seed, target=grid,
                         **_point(m, outs, xv, yv, easy, float(st.flops())))
            if static:
                with torch.no_grad():
                    right = (st(xv)[0].argmax(-1) == yv).float()
                point.update(static_size=f'{grid}x{grid} tokens',
                             static_at_gflops=float(st.flops()) / 1e9,
                             static_acc=float(right.mean()),
                             static_acc_easy=float(right[easy].mean()),
                             static_acc_hard=float(right[~easy].mean()))
            points.append(point)
    return dict(method='dvt', seed=seed, points=points)


REPORT = ('seed', 'target', 'exit1_easy', 'exit1_hard', 'exit1_auc', 'acc_exit1', 'acc_last', 'acc',
          'acc_easy', 'acc_hard', 'gflops', 'static_size', 'static_at_gflops', 'static_acc',
          'static_acc_easy', 'static_acc_hard')
METRIC = 'acc'
CLAIMS = {
    'easy images leave at exit 1 more often than hard ones (+0.15)': (
        ('exit1_easy', ), lambda p: p['exit1_easy'] > p['exit1_hard'] + 0.15),
    **matched_claims(METRIC),
}
