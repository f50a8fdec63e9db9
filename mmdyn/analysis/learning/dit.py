"""DiT learning check: routed tokens on the shapes, and accuracy per FLOP against a smaller
static input.

The paper's dense-task recipe in miniature (DiT starts from PVTv2 weights and learns its
routing):

1. a tiny static PVTv2 (the first two scales of :data:`TINY`, one block each: what the 1x1
   segmentation head reads) trains ``warmup`` iterations (batch 8, AdamW lr 3e-3) on 512 64x64
   scenes (``scene='shapes'``: :func:`mmdyn.datasets.toy.draw_scene`, 5 labels: background +
   the 4 shape classes; ``'detail'``: :func:`.common.detail_scene`, small objects whose class
   only a fine texture tells);
2. its weights are tiled into a DiT of the :data:`TINY` sizes (``M`` = 4 stages; every
   ``B[i][j]`` of scales 0-1 gets stage ``i``, every ``P[0][j]`` the second patch embedding:
   ``DiT.pvtv2_to_dit``; only the gates are new; scales 2-3 cannot reach the two outputs, so
   they never run and cost nothing) that trains ``iters`` more iterations (AdamW at ``ft_lr``
   1e-3) with the budget loss.
   It starts from the PVTv2 path only: the gates off it start closed (``row_init_on`` /
   ``col_init_on`` ``(0.98, 0.02)``), so the fine-tune starts at PVTv2's cost (the paper's "all
   elements of the decision mask are 1" is for training from scratch); the budget target
   ``target`` (the cost relative to the PVTv2 host) is reached linearly over the first
   ``ramp`` of the fine-tune, lambda ``lam``; the eval gates are the trained ones (no EMA copy);
3. on 64 new scenes: the share of object pixels and of background pixels whose token a row
   gate runs, averaged over the stages the image reaches (a token painted over its pixels),
   the mIoU and the realised FLOPs per image.

The static host made equally cheap: the same PVTv2 on the input resized to the size whose FLOPs
are closest to DiT's realised FLOPs, trained ``warmup + iters`` iterations.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .common import (TinySegmenter, fit_segmenter, matched_claims, mean_iou, paint,
                     run_segmentation_seed, scenes, seeded_scenes)

SIZE = 64
NUM_CLASSES = 5
#: The DiT grid's per-scale settings; the static host is its first two scales.
TINY = dict(embed_dims=[16, 24, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 1, 1])
HOST_SCALES = 2
#: ``ft_lr`` / ``gate_lr``: learning rates of the fine-tune (None: ``lr``) and of its gates
#: (None: ``ft_lr``).
RECIPE = dict(warmup=600, iters=300, batch=8, lr=3e-3, scene='shapes', lam=10.0, ramp=0.5,
              ft_lr=1e-3, gate_lr=None)
#: Scene kinds this protocol runs on (:func:`.common.scenes`).
SCENES = ('shapes', 'detail')
STATIC_SIDES = tuple(range(24, SIZE + 1, 8))
DEFAULT_TARGETS = (0.6, )
#: what --targets may hold: (what it is, low, high, low open, high open, integers only)
TARGET_RANGE = ('the budget mu', 0.0, 1.0, True, False, False)
METRIC = 'miou'
#: Initial "on" probabilities of the gates on / off the PVTv2 path.
GATE_INIT = (0.98, 0.02)


def segmenter(backbone, in_size=None) -> TinySegmenter:
    """Scales 0 and 1 concatenated at stride 4, a 1x1 classifier, bilinear up to 64x64; the
    input is resized to ``in_size`` first when one is given."""
    return TinySegmenter(backbone, sum(TINY['embed_dims'][:2]), NUM_CLASSES, (SIZE, SIZE),
                         in_size, maps='first_two')


def _pvt(**kw):
    """The static host: PVTv2 with the first :data:`HOST_SCALES` scales of :data:`TINY`."""
    from mmdyn.models.backbones.pvt import PVTv2
    arch = {k: v[:HOST_SCALES] for k, v in TINY.items()}
    m = PVTv2(arch=arch, patch_sizes=(7, 3, 3, 3)[:HOST_SCALES], out_indices=(0, 1),
              drop_path_rate=0., **kw)
    m.init_weights()
    return m


def _dit(target: float, lam: float):
    """The DiT grid, starting on the PVTv2 path, its budget ``target`` relative to the
    host (DiT's ``mu`` is relative to the four-scale PVTv2 of :data:`TINY`)."""
    from mmdyn.models.backbones.dit import DiT
    dit = DiT(arch=dict(TINY), num_stages=4, budget=1.0, budget_weight=lam, gate_momentum=None,
              out_indices=(0, 1), drop_path_rate=0., row_init_on=GATE_INIT,
              col_init_on=GATE_INIT)
    dit.init_weights()
    dit.budget_loss.target = target * host_to_base(dit)
    return dit


def host_to_base(dit) -> float:
    """FLOPs of the host (two scales) over DiT's ``C_base`` (four), at 64x64."""
    return static_flops_at((SIZE, SIZE)) / dit.base_flops((SIZE, SIZE))


def _budget_loss(model, _labels):
    loss = sum(model.backbone.aux_losses.values())
    model.backbone.aux_losses = {}
    return loss


def make_data(scene: str = 'shapes'):
    """Training scenes are drawn per seed; this gives the validation set."""
    return scenes(np.random.default_rng(123), 64, SIZE, kind=scene)


def static_flops_at(size: Tuple[int, int]) -> float:
    return float(_pvt().static_flops(size))


def routed_share(bb, shape: torch.Tensor) -> Tuple[float, float]:
    """Share of shape / background pixels whose token the row gates run, averaged over the
    stages ``B[i][j]`` each image reaches (off the PVTv2 path too)."""
    run = torch.zeros(shape.shape, dtype=torch.float64)
    count = torch.zeros(shape.shape, dtype=torch.float64)
    for key, g in bb.last_maps.items():
        if not key.startswith('row_'):
            continue
        i, j = (int(v) for v in key.split('_')[1:])
        r = bb.last_reached[:, i, j].double().cpu()  # images whose node F[i][j] was reached
        run += paint(g.double().cpu(), (SIZE, SIZE)) * r[:, None, None]
        count += r[:, None, None].expand_as(count)
    share = run / count.clamp(min=1)
    return float(share[shape].mean()), float(share[~shape].mean())


def _ramp(dit, final: float, start: float, steps: int):
    """A ``progress`` callback moving the budget target linearly from ``start`` to ``final``
    over ``steps`` iterations."""
    state = dict(k=0)

    def step():
        state['k'] += 1
        t = min(1.0, state['k'] / max(steps, 1))
        dit.budget_loss.target = start + t * (final - start)
    return step


def train_dynamic(seed: int, target: float, val, **kw) -> Dict:
    r = dict(RECIPE, **kw)
    data, gen = seeded_scenes(seed, SIZE, r['scene'])
    static = segmenter(_pvt())
    fit_segmenter(static, data, r['warmup'], gen, r['batch'], r['lr'])

    dit = _dit(target, r['lam'])
    model = segmenter(dit)
    sd = {f'backbone.{k}': v for k, v in dit.pvtv2_to_dit(static.backbone.state_dict()).items()}
    sd.update({k: v for k, v in static.state_dict().items() if k.startswith('head.')})
    missing, unexpected = model.load_state_dict(sd, strict=False)
    unused = ('stages.2.', 'stages.3.', 'downs.1.', 'downs.2.', 'out_norms.2.', 'out_norms.3.')
    if unexpected or not all('gate' in k or k[9:].startswith(unused) for k in missing):
        raise RuntimeError(f'DiT learning check: only the gates should be new ({missing}, '
                           f'{unexpected})')
    final, h2b = dit.budget_loss.target, host_to_base(dit)
    ft_lr = r['lr'] if r['ft_lr'] is None else r['ft_lr']
    gates = [p for k, p in model.named_parameters() if 'gates' in k]
    others = [p for k, p in model.named_parameters() if 'gates' not in k]
    groups = [dict(params=others),
              dict(params=gates, lr=ft_lr if r['gate_lr'] is None else r['gate_lr'])]
    fit_segmenter(model, data, r['iters'], gen, r['batch'], ft_lr, extra_loss=_budget_loss,
                  progress=_ramp(dit, final, h2b, int(r['ramp'] * r['iters'])),
                  param_groups=groups)

    x, y = val
    with torch.no_grad():
        static_pred = static(x).argmax(1)
        pred = model(x).argmax(1)
    if bool(dit.last_reached[:, HOST_SCALES:].any()):
        raise RuntimeError('DiT learning check: scales 2-3 cannot reach an output yet ran')
    on_shapes, on_background = routed_share(dit, y > 0)
    host = static_flops_at((SIZE, SIZE))
    gflops = float(dit.last_flops.double().mean()) / 1e9
    return dict(routed_on_shapes=on_shapes, routed_on_background=on_background,
                miou=mean_iou(pred, y, NUM_CLASSES),
                host_miou=mean_iou(static_pred, y, NUM_CLASSES),
                flops_ratio=gflops * 1e9 / host, gflops=gflops, host_gflops=host / 1e9)


def run(seed: int = 0, targets: Sequence[float] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, **kw) -> Dict:
    """One seed: DiT at each budget (cost relative to the host) and (``static``) the PVTv2
    host on a smaller input."""
    return run_segmentation_seed(
        'dit', seed, targets, data if data is not None else make_data(kw.get('scene', 'shapes')),
        train_dynamic, lambda size: segmenter(_pvt(), in_size=size), static_flops_at,
        STATIC_SIDES, NUM_CLASSES, RECIPE, SIZE, static, threads, **kw)


REPORT = ('seed', 'target', 'routed_on_shapes', 'routed_on_background', 'miou', 'host_miou',
          'flops_ratio', 'gflops', 'static_size', 'static_at_gflops', 'static_miou')
CLAIMS = {
    'tokens routed on shapes > 1.5x background': (
        ('routed_on_shapes', ), lambda p: p['routed_on_shapes'] > 1.5 * p['routed_on_background']),
    **matched_claims(METRIC),
}
