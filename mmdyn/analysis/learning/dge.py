"""DGE learning check: fine queries on the shapes, and accuracy per FLOP against a smaller
static input.

The paper's dense-task recipe in miniature (a trained host fine-tuned with DGE):

1. a tiny two-stage static PVT (``DGEPVT(dge=False)``, 3 blocks) with a 1x1 segmentation head
   on both stages trains ``warmup`` iterations (batch 8, AdamW lr 3e-3, cross-entropy) on 512
   64x64 scenes of :func:`mmdyn.datasets.toy.draw_scene` (the generator behind the toy ADE20K
   set: a flat background and 1-3 textured shapes; labels: background + the 4 shape classes);
2. its weights load into the same host with DGE (the paper's gate: ``Linear(C, K)`` on each
   region's average token, Phi = {1, 2, 4}, ``init_prob`` 0.95, budget ``gamma`` of Eq. 7
   (``budget_convention='paper'``), lambda = 1; only the gates are new) and training goes on for ``iters`` iterations with the
   budget loss;
3. on 64 new scenes: the share of shape pixels and of background pixels whose query is at
   granularity 1 (the finest), averaged over the three DGE layers, the mIoU and the realised
   FLOPs per image.

The static host made equally cheap: the same PVT on the input resized to the size whose FLOPs
are closest to the dynamic model's realised FLOPs, trained ``warmup + iters`` iterations, its
logits up-sampled to the full size.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import (TinySegmenter, fit_segmenter, matched_claims, mean_iou, num_threads, paint,
                     run_budgets, scenes, seeded_scenes, train_static_segmenter)

SIZE = 64
NUM_CLASSES = 5  # background + the four shape classes
TINY = dict(embed_dims=[16, 32], depths=[2, 1], num_heads=[1, 2], mlp_ratios=[2, 2],
            sr_ratios=[4, 2])
HOST = dict(arch=TINY, patch_sizes=(4, 2), pretrain_img_size=SIZE, drop_path_rate=0.,
            out_indices=(0, 1))
RECIPE = dict(warmup=800, iters=400, batch=8, lr=3e-3, scene='shapes')
#: Scene kinds this protocol runs on (:func:`.common.scenes`).
SCENES = ('shapes', 'detail')
#: Static input sides tried when matching FLOPs (multiples of the total stride 8).
STATIC_SIDES = tuple(range(24, SIZE + 1, 8))
DEFAULT_TARGETS = (0.2, )
#: what --targets may hold: (what it is, low, high, low open, high open, integers only)
TARGET_RANGE = ('the budget gamma', 0.0, 1.0, False, False, False)
#: Stage depths tried for the fewer-blocks static host (the host has (2, 1)).
SHALLOW_DEPTHS = ((2, 1), (1, 1), (2, 0), (1, 0))


def segmenter(backbone, in_size=None, out_size=(SIZE, SIZE)) -> TinySegmenter:
    """The backbone's two stages, concatenated at stride 4, a 1x1 classifier, bilinear up to
    ``out_size``; the input is resized to ``in_size`` first when one is given."""
    return TinySegmenter(backbone, sum(TINY['embed_dims']), NUM_CLASSES, out_size, in_size,
                         maps='first_two')


def _budget_loss(model, _labels):
    return model.backbone.aux_losses.pop('loss_budget')


def make_data(scene: str = 'shapes'):
    """Training scenes are drawn per seed inside :func:`run`; this gives the validation set."""
    return scenes(np.random.default_rng(123), 64, SIZE, kind=scene)


def static_flops_at(size: Tuple[int, int]) -> float:
    from mmdyn.models.backbones.dge import DGEPVT
    return float(DGEPVT(dge=False, **HOST).static_flops(size))


def train_host(seed: int, progress: Optional[Callable[[], None]] = None, **kw) -> Dict:
    """Step 1: the static host trained ``warmup`` iterations. Returns the model and the random
    states to continue from, so that every budget fine-tunes from the same point."""
    from mmdyn.models.backbones.dge import DGEPVT
    r = dict(RECIPE, **kw)
    data, gen = seeded_scenes(seed, SIZE, r['scene'])
    static = segmenter(DGEPVT(dge=False, **HOST))
    static.backbone.init_weights()
    fit_segmenter(static, data, r['warmup'], gen, r['batch'], r['lr'], progress=progress)
    return dict(model=static, data=data, recipe=r, gen_state=gen.get_state(),
                rng_state=torch.get_rng_state())


def finetune(host: Dict, gamma: float, iters: Optional[int] = None,
             progress: Optional[Callable[[], None]] = None) -> nn.Module:
    """Step 2: the host's weights in the same host with DGE (only the gates are new), trained
    ``iters`` iterations with the budget loss (gamma is an Eq. 7 budget, the paper's query
    ratio, as the protocol was calibrated)."""
    from mmdyn.models.backbones.dge import DGEPVT
    r = host['recipe']
    torch.set_rng_state(host['rng_state'])
    gen = torch.Generator()
    gen.set_state(host['gen_state'])
    model = segmenter(DGEPVT(granularities=(1, 2, 4), budget=gamma,
                                 budget_convention='paper', **HOST))
    model.backbone.init_weights()
    missing, unexpected = model.load_state_dict(host['model'].state_dict(), strict=False)
    if unexpected or not missing or not all('.gate.' in k for k in missing):
        raise RuntimeError(f'DGE learning check: only the gates should be new ({missing}, '
                           f'{unexpected})')
    fit_segmenter(model, host['data'], r['iters'] if iters is None else iters, gen, r['batch'],
                  r['lr'], extra_loss=_budget_loss, progress=progress)
    return model


def measure(model: nn.Module, host_model: nn.Module, val) -> Dict:
    """Step 3: decisions, mIoU and realised FLOPs on the validation scenes."""
    x, y = val
    with torch.no_grad():
        static_pred = host_model(x).argmax(1)
        pred = model(x).argmax(1)
    bb = model.backbone
    fine = torch.stack([paint((m == 1).float(), (SIZE, SIZE))
                        for m in bb.last_maps.values()]).mean(0)
    shape = y > 0
    return dict(fine_on_shapes=float(fine[shape].mean()),
                fine_on_background=float(fine[~shape].mean()),
                miou=mean_iou(pred, y, NUM_CLASSES),
                host_miou=mean_iou(static_pred, y, NUM_CLASSES),
                beta=float(bb.last_stats['budget_ratio'].mean()),
                flops_ratio=float(bb.last_stats['flops_ratio'].mean()),
                gflops=float(bb.last_flops.double().mean()) / 1e9,
                static_gflops=float(bb.static_flops((SIZE, SIZE))) / 1e9,
                layers=sorted(bb.last_maps))


def train_dynamic(seed: int, gamma: float, val, **kw) -> Dict:
    """Steps 1-3 for one budget."""
    host = train_host(seed, **kw)
    return measure(finetune(host, gamma), host['model'], val)


def _static_host(size):
    from mmdyn.models.backbones.dge import DGEPVT
    model = segmenter(DGEPVT(dge=False, **HOST), in_size=size)
    model.backbone.init_weights()
    return model


def train_static(seed: int, size: Tuple[int, int], val, **kw) -> Dict:
    """The static host on a ``size`` input for ``warmup + iters`` iterations."""
    return train_static_segmenter(seed, lambda: _static_host(size), size, val, NUM_CLASSES,
                                  dict(RECIPE, **kw), SIZE)


def _shallow_host(depths: Tuple[int, int]):
    from mmdyn.models.backbones.dge import DGEPVT
    model = segmenter(DGEPVT(dge=False, **dict(HOST, arch=dict(TINY, depths=list(depths)))))
    model.backbone.init_weights()
    return model


def train_shallow(seed: int, target_flops: float, val, **kw) -> Dict:
    """The other obvious cheap host: the same PVT on the full input with fewer blocks (the
    stage depths of :data:`SHALLOW_DEPTHS` whose FLOPs are closest to ``target_flops``),
    trained ``warmup + iters`` iterations; keys prefixed ``shallow_``."""
    depths = min(SHALLOW_DEPTHS, key=lambda d: abs(
        float(_shallow_host(d).backbone.static_flops((SIZE, SIZE))) - target_flops))
    st = train_static_segmenter(seed, lambda: _shallow_host(depths), (SIZE, SIZE), val,
                                NUM_CLASSES, dict(RECIPE, **kw), SIZE)
    return dict(shallow_depths='-'.join(map(str, depths)), shallow_at_gflops=st['gflops'],
                shallow_miou=st['miou'])


def run(seed: int = 0, targets: Sequence[float] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, shallow: bool = False, **kw) -> Dict:
    """One seed: the dynamic model at each budget gamma (one warm-up shared by every budget)
    and (``static``) the static host at the matched input size; ``shallow``: also the host
    with fewer blocks at the full size (:func:`train_shallow`)."""
    val = data if data is not None else make_data()
    with num_threads(threads):
        host = train_host(seed, **kw)

        def dynamic(gamma):
            d = measure(finetune(host, gamma), host['model'], val)
            d.pop('layers')
            if shallow:
                d.update(train_shallow(seed, d['gflops'] * 1e9, val, **kw))
            return d

        return run_budgets('dge', seed, targets, dynamic,
                           (lambda size: train_static(seed, size, val, **kw)) if static else None,
                           static_flops_at, STATIC_SIDES)


REPORT = ('seed', 'target', 'fine_on_shapes', 'fine_on_background', 'beta', 'flops_ratio',
          'miou', 'host_miou', 'gflops', 'static_size', 'static_at_gflops', 'static_miou',
          'shallow_depths', 'shallow_at_gflops', 'shallow_miou')
METRIC = 'miou'
CLAIMS = {
    'fine queries on shapes > 2x background': (
        ('fine_on_shapes', ), lambda p: p['fine_on_shapes'] > 2 * p['fine_on_background']),
    **matched_claims(METRIC),
    'miou >= fewer-blocks host (full input)': (
        ('shallow_miou', ), lambda p: p['miou'] >= p['shallow_miou']),
}
