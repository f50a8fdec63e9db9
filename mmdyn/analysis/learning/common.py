"""Shared pieces of the learning checks: data, metrics, static-size matching, summaries.

A learning check trains a tiny model of one method on the project's generated scenes
(:mod:`mmdyn.datasets.toy`: textured shapes on a nearly flat background) and measures two
claims of the paper:

* **where compute goes**: the learned decisions spend more compute on the shapes than on the
  background (or, for early exits, easy images leave earlier);
* **accuracy per FLOP**: at matched realised FLOPs the dynamic model is at least as accurate as
  its static host made equally cheap in the obvious way (a smaller input), trained for the same
  number of iterations.

Each method's protocol lives in its own module of this package and returns plain dicts, so the
tool (``tools/analysis_tools/learning_check.py``) and the tests share one implementation.
"""
import contextlib
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.datasets.toy import SHAPES, Instance, _polygon, draw_scene


@contextlib.contextmanager
def num_threads(n: int):
    """Run a block with ``n`` intra-op threads (tiny models: one thread is fastest) and
    without mmengine's per-parameter initialisation log."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    old, level = torch.get_num_threads(), logger.level
    torch.set_num_threads(n)
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        torch.set_num_threads(old)
        logger.setLevel(level)


#: Scene kinds of :func:`scenes`: ``'shapes'`` (the toy datasets' generator) and
#: ``'detail'`` (:func:`detail_scene`).
SCENE_KINDS = ('shapes', 'detail')


class TinySegmenter(nn.Module):
    """A backbone, a 1x1 classifier and bilinear up-sampling to ``out_size``, on the backbone's
    last map (``maps='last'``) or on its first two maps concatenated at the first one's stride
    (``maps='first_two'``); the input is resized (anti-aliased) to ``in_size`` first when given:
    the smaller-input static hosts."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int,
                 out_size: Tuple[int, int], in_size=None, maps: str = 'last'):
        super().__init__()
        if maps not in ('last', 'first_two'):
            raise ValueError(f"TinySegmenter: maps must be 'last' or 'first_two', got {maps!r}")
        self.backbone = backbone
        self.in_size = None if in_size is None else tuple(in_size)
        self.out_size = tuple(out_size)
        self.maps = maps
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        if self.in_size is not None and tuple(x.shape[-2:]) != self.in_size:
            x = F.interpolate(x, size=self.in_size, mode='bilinear', align_corners=False,
                              antialias=True)
        outs = self.backbone(x)
        if self.maps == 'last':
            f = outs[-1]
        else:
            f0, f1 = outs[:2]
            f = torch.cat([f0, F.interpolate(f1, size=f0.shape[-2:], mode='nearest')], 1)
        return F.interpolate(self.head(f), size=self.out_size, mode='bilinear',
                             align_corners=False)


def scenes(rng: np.random.Generator, n: int, size: int,
           num_objects: Tuple[int, int] = (1, 3),
           kind: str = 'shapes') -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` generated scenes: images in [-1, 1] (NCHW float) and labels (0 background,
    1..4 the object classes). ``kind='shapes'``: :func:`mmdyn.datasets.toy.draw_scene` (large
    shapes, class = silhouette and texture); ``'detail'``: :func:`detail_scene` (small objects
    whose class only a fine texture tells)."""
    if kind not in SCENE_KINDS:
        raise ValueError(f'unknown scene kind {kind!r}; choose one of {SCENE_KINDS}')
    draw = draw_scene if kind == 'shapes' else detail_scene
    if kind == 'detail' and num_objects == (1, 3):
        num_objects = DETAIL_OBJECTS
    imgs, labels = [], []
    for _ in range(n):
        img, instances = draw(rng, (size, size), num_objects=num_objects)
        lbl = np.zeros((size, size), np.int64)
        for inst in instances:
            lbl[inst.mask] = inst.cls + 1
        imgs.append(img)
        labels.append(lbl)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(np.stack(labels))


#: Detail scenes: objects per scene and half-size range (fraction of the side).
DETAIL_OBJECTS = (2, 4)
DETAIL_SCALE = (0.06, 0.11)


def detail_pattern(cls: int, h: int, w: int, phase: Tuple[int, int]) -> np.ndarray:
    """The ``[h, w]`` 0/1 texture of class ``cls``, all four with mean 1/2 and all their
    energy at half the sampling rate along at least one axis: 0 horizontal lines, 1 vertical
    lines, 2 a one-pixel checkerboard, 3 vertical lines whose phase flips every two rows.
    Down-sampled with anti-aliasing (by 3/4 or more), all four become nearly the same flat
    tone."""
    y, x = np.mgrid[0:h, 0:w]
    y, x = y + phase[0], x + phase[1]
    pattern = (y % 2, x % 2, (x + y) % 2, (x + y // 2) % 2)[cls]
    return pattern.astype(np.float32)


def detail_scene(rng: np.random.Generator, size: Tuple[int, int],
                 num_objects: Tuple[int, int] = DETAIL_OBJECTS,
                 scale: Tuple[float, float] = DETAIL_SCALE):
    """A scene whose detail is localised: a flat background with a smooth gradient and weak
    noise over most of the image, and a few small objects (silhouette drawn independently of
    the class) whose class is given only by a high-frequency texture
    (:func:`detail_pattern`); an object's mean colour differs from the background, so *where*
    the objects are survives a smaller input, *what* they are does not.

    Returns ``(image, instances)`` like :func:`mmdyn.datasets.toy.draw_scene` (RGB order is
    irrelevant here: uint8 ``[H, W, 3]``)."""
    h, w = size
    base = rng.uniform(60, 200, size=3)
    gy, gx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * gx + np.sin(angle) * gy)[..., None]
    img = base + ramp * rng.uniform(-25, 25, size=3) + rng.normal(0, 2.0, size=(h, w, 3))
    occupied = np.zeros((h, w), bool)
    instances = []
    m = min(h, w)
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        cls = int(rng.integers(len(SHAPES)))
        for _attempt in range(20):
            rx = rng.uniform(*scale) * m
            ry = rx * rng.uniform(0.8, 1.25)
            cx, cy = rng.uniform(rx + 1, w - rx - 1), rng.uniform(ry + 1, h - ry - 1)
            poly = _polygon(SHAPES[int(rng.integers(len(SHAPES)))], cx, cy, rx, ry, rng)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            mask = mask.astype(bool)
            # one free pixel around each object, so that two objects never touch
            if mask.sum() >= 9 and not (cv2.dilate(mask.astype(np.uint8), np.ones(
                    (3, 3), np.uint8)).astype(bool) & occupied).any():
                break
        else:
            continue
        occupied |= mask
        mean = np.clip(base + rng.choice([-1, 1], 3) * rng.uniform(35, 70, 3), 50, 205)
        tex = detail_pattern(cls, h, w, tuple(rng.integers(0, 4, 2)))[..., None]
        img[mask] = (mean + 50 * (2 * tex - 1))[mask]
        instances.append(Instance(cls, mask, poly))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def mean_iou(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of intersection over union (a class absent from both counts 1)."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, label == c
        union = int((p | t).sum())
        ious.append(1.0 if union == 0 else int((p & t).sum()) / union)
    return float(np.mean(ious))


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = pos.flatten().double(), neg.flatten().double()
    if not len(pos) or not len(neg):
        return float('nan')
    d = pos[:, None] - neg[None, :]
    return ((d > 0).double().mean() + 0.5 * (d == 0).double().mean()).item()


def paint(region_map: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[B, gh, gw]`` per-region values -> ``[B, H, W]`` (each region painted over its
    pixels; the grid divides the size)."""
    sh, sw = size[0] // region_map.shape[-2], size[1] // region_map.shape[-1]
    return region_map.repeat_interleave(sh, -2).repeat_interleave(sw, -1)


def closest_static_size(flops_of: Callable[[Tuple[int, int]], float], target: float,
                        sizes: Iterable[int]) -> Tuple[Tuple[int, int], float]:
    """The ``(H, W)`` (both from ``sizes``) whose static FLOPs are closest to ``target``,
    and those FLOPs."""
    best = None
    for h in sizes:
        for w in sizes:
            f = float(flops_of((h, w)))
            if best is None or abs(f - target) < abs(best[1] - target):
                best = ((h, w), f)
    return best


def table(rows: List[Dict], keys: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 3 decimals)."""
    def fmt(v):
        return f'{v:.3f}' if isinstance(v, float) else str(v)
    out = ['| ' + ' | '.join(keys) + ' |', '|' + ' --- |' * len(keys)]
    out += ['| ' + ' | '.join(fmt(r.get(k, '')) for k in keys) + ' |' for r in rows]
    return '\n'.join(out)


def fit_segmenter(model, data, iters: int, gen: torch.Generator, batch: int, lr: float,
                  extra_loss: Optional[Callable] = None,
                  progress: Optional[Callable[[], None]] = None,
                  param_groups: Optional[List[Dict]] = None) -> None:
    """``iters`` AdamW steps (no weight decay) of pixel cross-entropy on random batches of
    ``data`` (``extra_loss(model, labels)`` added when given: budget or auxiliary losses;
    ``param_groups``: the optimizer's parameter groups, e.g. a learning rate for the gates)."""
    x_train, y_train = data
    opt = torch.optim.AdamW(model.parameters() if param_groups is None else param_groups,
                            lr=lr, weight_decay=0.)
    model.train()
    for _ in range(iters):
        idx = torch.randint(0, len(x_train), (batch, ), generator=gen)
        y = y_train[idx]
        loss = F.cross_entropy(model(x_train[idx]), y)
        if extra_loss is not None:
            loss = loss + extra_loss(model, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress()
    model.eval()


def run_budgets(method: str, seed: int, targets: Sequence[float],
                dynamic: Callable[[float], Dict],
                static: Optional[Callable[[Tuple[int, int]], Dict]],
                static_flops_at: Callable[[Tuple[int, int]], float],
                sizes: Iterable[int]) -> Dict:
    """One seed: ``dynamic(target)`` per budget (a dict with ``gflops``), and, when ``static``
    is given, the static host at the input size whose FLOPs are closest to the dynamic model's
    (``static(size)``: a dict with ``gflops`` and its metrics, reported as ``static_<key>``)."""
    points = []
    for t in targets:
        d = dynamic(t)
        point = dict(seed=seed, target=t, **d)
        if static is not None:
            size, _ = closest_static_size(static_flops_at, d['gflops'] * 1e9, sizes)
            st = dict(static(size))
            point.update(static_size=f'{size[0]}x{size[1]}', static_at_gflops=st.pop('gflops'),
                         **{f'static_{k}': v for k, v in st.items()})
        points.append(point)
    return dict(method=method, seed=seed, points=points)


def run_segmentation_seed(method: str, seed: int, targets: Sequence[float], val,
                          train_dynamic: Callable[..., Dict],
                          static_segmenter: Callable[[Tuple[int, int]], torch.nn.Module],
                          static_flops_at: Callable[[Tuple[int, int]], float],
                          sizes: Iterable[int], num_classes: int, recipe: Dict, image_size: int,
                          static: bool = True, threads: int = 1, **kw) -> Dict:
    """One seed of a segmentation protocol (:func:`run_budgets`): the dynamic model
    ``train_dynamic(seed, target, val, **kw)`` at each target and (``static``) the static host
    made cheaper, ``static_segmenter(size)`` trained by :func:`train_static_segmenter` with
    ``recipe`` updated by ``kw``, at the input size whose FLOPs match."""
    def train_static(size):
        return train_static_segmenter(seed, lambda: static_segmenter(size), size, val,
                                      num_classes, dict(recipe, **kw), image_size)

    with num_threads(threads):
        return run_budgets(method, seed, targets, lambda t: train_dynamic(seed, t, val, **kw),
                           train_static if static else None, static_flops_at, sizes)


def matched_claims(metric: str) -> Dict[str, Tuple[Tuple[str, ...], Callable[[Dict], bool]]]:
    """The accuracy-per-FLOP claims every protocol checks: ``{name: (keys read, test)}``."""
    return {
        'FLOPs matched within 5 %': (
            ('static_at_gflops', ), lambda p: abs(p['static_at_gflops'] / p['gflops'] - 1) <= 0.05),
        f'{metric} >= static host at matched FLOPs': (
            (f'static_{metric}', ), lambda p: p[metric] >= p[f'static_{metric}']),
    }


def seeded_scenes(seed: int, image_size: int, scene: str = 'shapes', num: int = 512):
    """Seed torch's global generator, draw the seed's ``num`` training scenes and return them
    with the generator that orders their batches."""
    torch.manual_seed(seed)
    data = scenes(np.random.default_rng(seed), num, image_size, kind=scene)
    return data, torch.Generator().manual_seed(seed)


def train_static_segmenter(seed: int, build: Callable[[], torch.nn.Module], size: Tuple[int, int],
                           val, num_classes: int, recipe: Dict, image_size: int) -> Dict:
    """The static host made cheaper (``build()``: its segmenter on a ``size`` input) trained
    ``warmup + iters`` iterations on the seed's scenes; its mIoU on ``val`` and its FLOPs."""
    data, gen = seeded_scenes(seed, image_size, recipe.get('scene', 'shapes'))
    model = build()
    fit_segmenter(model, data, recipe['warmup'] + recipe['iters'], gen, recipe['batch'],
                  recipe['lr'])
    x, y = val
    with torch.no_grad():
        pred = model(x).argmax(1)
    return dict(miou=mean_iou(pred, y, num_classes),
                gflops=float(model.backbone.static_flops(size)) / 1e9)
