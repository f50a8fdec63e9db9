"""DVT learning check: easy images leave at the first exit more often than hard ones, and
the cascade beats a static ViT with fewer tokens at the same average FLOPs.

Data: 48x48 scenes of :func:`mmdyn.datasets.toy.draw_scene`; the label is the class of the
shape. Half the images are *easy* (one large shape, half-size 0.28-0.36 of the side), half
*hard* (one small shape, half-size 0.1-0.14: a few pixels across at the first exit's 24x24).

* Dynamic: a tiny two-exit DVT (32 dims, 2 blocks per exit, patch 8: a 3x3-token exit on the
  image resized to 24x24, then a 6x6-token exit with feature and relationship reuse), both exits
  trained jointly with the sum of their cross-entropies (Eq. 1).
* Static: the same ViT at ``static_grid`` x ``static_grid`` tokens (the image resized to
  ``8 * static_grid``), trained for the same number of iterations.
* The first exit's threshold is set on the validation images so that the cascade's average
  realised FLOPs equal the static model's (the paper's budgeted setting: thresholds chosen for
  a FLOPs budget); the decisions and accuracy are then read at that threshold.
"""
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .common import matched_claims, num_threads

SIZE = 48
PATCH = 8
ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
GRIDS = (3, 6)
NUM_CLASSES = 4
RECIPE = dict(iters=2000, batch=32, lr=2e-3)
DEFAULT_TARGETS = (4, 5)  # the static grids whose FLOPs set the cascade's budgets


def make_split(rng: np.random.Generator, n: int):
    """``n`` images (half easy, half hard), labels and an ``easy`` flag."""
    from mmdyn.datasets.toy import draw_scene
    imgs, labels, easy = [], [], []
    for i in range(n):
        cls = int(rng.integers(NUM_CLASSES))
        is_easy = i % 2 == 0
        img, _ = draw_scene(rng, (SIZE, SIZE), classes=[cls],
                            num_objects=(1, 1),
                            scale=(0.28, 0.36) if is_easy else (0.1, 0.14))
        imgs.append(img)
        labels.append(cls)
        easy.append(is_easy)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.tensor(labels), torch.tensor(easy)


def make_data():
    return make_split(np.random.default_rng(1000), 1024), make_split(np.random.default_rng(2000),
                                                                      256)


def _fit(forward, params, data, seed, r):
    x, y, _ = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=r['lr'])
    for _ in range(r['iters']):
        idx = torch.randint(0, len(x), (r['batch'], ), generator=gen)
        xb = x[idx]
        if torch.rand(1, generator=gen).item() < 0.5:
            xb = xb.flip(-1)
        loss = sum(F.cross_entropy(o, y[idx]) for o in forward(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_cascade(train, seed: int, **kw):
    from mmdyn.models.classifiers.dvt import DVTClassifier
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    m = DVTClassifier(arch=ARCH, exits=GRIDS, patch_size=PATCH, num_classes=NUM_CLASSES)
    m.init_weights()
    m.train()
    _fit(m.run_all, m.parameters(), train, seed, r)
    return m.eval()


def train_static(train, grid: int, seed: int, **kw):
    from mmdyn.models.classifiers.dvt import DVTClassifier
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    # a one-exit cascade is not allowed; the static ViT is the first exit of a (grid, grid+1)
    # cascade, trained alone
    m = DVTClassifier(arch=ARCH, exits=(grid, grid + 1), patch_size=PATCH,
                      num_classes=NUM_CLASSES, feature_reuse=False, relation_reuse=False)
    m.init_weights()
    e = m.exits[0]
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


def run(seed: int = 0, targets: Sequence[int] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, **kw) -> Dict:
    train, val = data or make_data()
    xv, yv, easy = val
    points = []
    with num_threads(threads):
        m = train_cascade(train, seed, **kw)
        with torch.no_grad():
            outs = m.run_all(xv)
        conf = outs[0].softmax(-1).max(-1).values
        cum = [float(f) for f in m.cumulative_flops()]
        for grid in targets:
            st = train_static(train, grid, seed, **kw) if static else None
            budget = float(st.flops()) if st is not None else \
                float(m.exits[0].flops()) * (grid / GRIDS[0]) ** 2
            m.set_thresholds([threshold_for_flops(conf, cum, budget)])
            with torch.no_grad():
                logits, ex, _ = m.early_exit(xv)
            first = (ex == 0).float()
            right = (logits.argmax(-1) == yv).float()
            point = dict(seed=seed, target=grid, exit1_easy=float(first[easy].mean()),
                         exit1_hard=float(first[~easy].mean()),
                         acc=float(right.mean()), acc_easy=float(right[easy].mean()),
                         acc_hard=float(right[~easy].mean()),
                         acc_exit1=float((outs[0].argmax(-1) == yv).float().mean()),
                         acc_last=float((outs[1].argmax(-1) == yv).float().mean()),
                         gflops=float(m.last_flops.double().mean()) / 1e9)
            if st is not None:
                with torch.no_grad():
                    sl = st(xv)[0]
                point.update(static_size=f'{grid}x{grid} tokens',
                             static_at_gflops=float(st.flops()) / 1e9,
                             static_acc=float((sl.argmax(-1) == yv).float().mean()))
            points.append(point)
    return dict(method='dvt', seed=seed, points=points)


REPORT = ('seed', 'target', 'exit1_easy', 'exit1_hard', 'acc_exit1', 'acc_last', 'acc',
          'gflops', 'static_size', 'static_at_gflops', 'static_acc')
METRIC = 'acc'
CLAIMS = {
    'easy images leave at exit 1 more often than hard ones (+0.2)': (
        ('exit1_easy', ), lambda p: p['exit1_easy'] > p['exit1_hard'] + 0.2),
    **matched_claims(METRIC),
}
