"""DiT learning check: routed tokens on the shapes, and accuracy per FLOP against a smaller
static input.

The paper's recipe in miniature (DiT starts from PVTv2 weights and learns its routing):

1. a tiny static PVTv2 (4 scales, one block each) with a 1x1 segmentation head on its first
   two scales trains ``warmup`` iterations (batch 8, AdamW lr 3e-3) on 512 64x64 scenes of
   :func:`mmdyn.datasets.toy.draw_scene` (5 labels: background + the 4 shape classes);
2. its weights are tiled into a DiT of the same sizes (``M`` = 4 stages; every ``B[i][j]`` gets
   stage ``i``, every ``P[i][j]`` patch embedding ``i + 1``: ``DiT.pvtv2_to_dit``; only the
   gates are new) that trains ``iters`` more iterations with the budget loss (``mu``, the cost
   relative to PVTv2; lambda 0.8), the eval gates being the trained ones (no EMA copy);
3. on 64 new scenes: the share of shape pixels and of background pixels whose token a row gate
   runs, averaged over every stage the image reaches (a token painted over its pixels), the
   mIoU and the realised FLOPs per image.

The static host made equally cheap: the same PVTv2 on the input resized to the size whose FLOPs
are closest to DiT's realised FLOPs, trained ``warmup + iters`` iterations.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import fit_segmenter, matched_claims, mean_iou, paint, run_segmentation_seed, scenes

SIZE = 64
NUM_CLASSES = 5
TINY = dict(embed_dims=[16, 24, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 1, 1])
RECIPE = dict(warmup=800, iters=400, batch=8, lr=3e-3)
STATIC_SIDES = tuple(range(32, SIZE + 1, 8))
DEFAULT_TARGETS = (0.6, )
METRIC = 'miou'


class TinySegmenter(nn.Module):
    """Scales 0 and 1 concatenated at stride 4, a 1x1 classifier, bilinear up to 64x64; the
    input is resized to ``in_size`` first when one is given."""

    def __init__(self, backbone, in_size=None):
        super().__init__()
        self.backbone = backbone
        self.in_size = None if in_size is None else tuple(in_size)
        self.head = nn.Conv2d(sum(TINY['embed_dims'][:2]), NUM_CLASSES, 1)

    def forward(self, x):
        if self.in_size is not None and tuple(x.shape[-2:]) != self.in_size:
            x = F.interpolate(x, size=self.in_size, mode='bilinear', align_corners=False,
                              antialias=True)
        f0, f1 = self.backbone(x)[:2]
        f = torch.cat([f0, F.interpolate(f1, size=f0.shape[-2:], mode='nearest')], 1)
        return F.interpolate(self.head(f), size=(SIZE, SIZE), mode='bilinear',
                             align_corners=False)


def _pvt(**kw):
    from mmdyn.models.backbones.pvt import PVTv2
    m = PVTv2(arch=dict(TINY), out_indices=(0, 1), drop_path_rate=0., **kw)
    m.init_weights()
    return m


def _budget_loss(model, _labels):
    loss = sum(model.backbone.aux_losses.values())
    model.backbone.aux_losses = {}
    return loss


def make_data():
    return scenes(np.random.default_rng(123), 64, SIZE)


def static_flops_at(size: Tuple[int, int]) -> float:
    return float(_pvt().static_flops(size))


def routed_share(bb, shape: torch.Tensor) -> Tuple[float, float]:
    """Share of shape / background pixels whose token the row gates run, averaged over the
    stages each image reaches."""
    run = torch.zeros(shape.shape, dtype=torch.float64)
    count = torch.zeros(shape.shape, dtype=torch.float64)
    for key, g in bb.last_maps.items():
        if not key.startswith('row_'):
            continue
        i, j = (int(v) for v in key.split('_')[1:])
        r = bb.last_reached[:, i, j].double().cpu()  # images whose node F[i][j] was reached
        run += paint(g.double(), (SIZE, SIZE)) * r[:, None, None]
        count += r[:, None, None].expand_as(count)
    share = run / count.clamp(min=1)
    return float(share[shape].mean()), float(share[~shape].mean())


def train_dynamic(seed: int, mu: float, val, **kw) -> Dict:
    from mmdyn.models.backbones.dit import DiT
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    data = scenes(np.random.default_rng(seed), 512, SIZE)
    gen = torch.Generator().manual_seed(seed)
    static = TinySegmenter(_pvt())
    fit_segmenter(static, data, r['warmup'], gen, r['batch'], r['lr'])

    dit = DiT(arch=dict(TINY), num_stages=4, budget=mu, gate_momentum=None, out_indices=(0, 1),
              drop_path_rate=0.)
    dit.init_weights()
    model = TinySegmenter(dit)
    sd = {f'backbone.{k}': v for k, v in dit.pvtv2_to_dit(static.backbone.state_dict()).items()}
    sd.update({k: v for k, v in static.state_dict().items() if k.startswith('head.')})
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or not all('gate' in k for k in missing):
        raise RuntimeError(f'DiT learning check: only the gates should be new ({missing}, '
                           f'{unexpected})')
    fit_segmenter(model, data, r['iters'], gen, r['batch'], r['lr'], extra_loss=_budget_loss)

    x, y = val
    with torch.no_grad():
        static_pred = static(x).argmax(1)
        pred = model(x).argmax(1)
    on_shapes, on_background = routed_share(dit, y > 0)
    return dict(routed_on_shapes=on_shapes, routed_on_background=on_background,
                miou=mean_iou(pred, y, NUM_CLASSES),
                host_miou=mean_iou(static_pred, y, NUM_CLASSES),
                gflops=float(dit.last_flops.double().mean()) / 1e9,
                pvt_gflops=float(static.backbone.static_flops((SIZE, SIZE))) / 1e9)


def run(seed: int = 0, targets: Sequence[float] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, **kw) -> Dict:
    """One seed: DiT at each budget mu and (``static``) the PVTv2 host on a smaller input."""
    return run_segmentation_seed(
        'dit', seed, targets, data if data is not None else make_data(), train_dynamic,
        lambda size: TinySegmenter(_pvt(), in_size=size), static_flops_at, STATIC_SIDES,
        NUM_CLASSES, RECIPE, SIZE, static, threads, **kw)


REPORT = ('seed', 'target', 'routed_on_shapes', 'routed_on_background', 'miou', 'host_miou',
          'gflops', 'pvt_gflops', 'static_size', 'static_at_gflops', 'static_miou')
CLAIMS = {
    'tokens routed on shapes > 1.5x background': (
        ('routed_on_shapes', ), lambda p: p['routed_on_shapes'] > 1.5 * p['routed_on_background']),
    **matched_claims(METRIC),
}
