"""DoViT learning check: tokens on the flat background stop early, tokens on the shapes run
on, and accuracy per FLOP against a smaller static input.

Task: 5-label segmentation (background + the 4 shape classes) of 48x48 scenes of
:func:`mmdyn.datasets.toy.draw_scene`.

* Dynamic: a tiny DoViT (32 dims, 4 blocks, patch 4: 12x12 tokens; decisions after blocks 1, 2
  and 3, each with the paper's 1x1-convolution auxiliary head, ``aux_head='conv1x1'``, cheap on
  a CPU; the authors' FCN head is the library default) and a 1x1 decode head on the last map.
  Loss: decode cross-entropy + 0.4 x each auxiliary cross-entropy (the authors' weight). The
  threshold is held at 1.0 (nothing stops, the static host) for ``warmup`` iterations, then set
  to ``xi`` for ``iters`` more (the training ramp 1.0 -> xi in two steps). xi is 0.95 on the
  shapes scenes and 0.999 on the detail scenes (:data:`DEFAULT_TARGETS`): there the first
  auxiliary head reads the textures after one block and is near-certain on the objects too,
  so at 0.95-0.995 nearly every token stops at the first decision.
* Static: the same ViT (no auxiliary heads) on the input resized to the size whose FLOPs are
  closest to DoViT's realised FLOPs, trained ``warmup + iters`` iterations with the decode loss.

Measured on 64 new scenes: the share of shape and of background tokens still running after
each decision (a token is "shape" when more than half its pixels are; ``running_on_objects``
on the detail scenes), the mIoU, the realised FLOPs per image.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .common import (TinySegmenter, fit_segmenter, matched_claims, mean_iou,
                     run_segmentation_seed, scenes, seeded_scenes)

SIZE = 48
PATCH = 4
NUM_CLASSES = 5
ARCH = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2)
RECIPE = dict(warmup=600, iters=400, batch=8, lr=2e-3, aux_weight=0.4, scene='shapes')
#: Scene kinds this protocol runs on (:func:`.common.scenes`).
SCENES = ('shapes', 'detail')
STATIC_SIDES = tuple(range(24, SIZE + 1, PATCH))
#: The threshold xi per scene kind.
DEFAULT_TARGETS = {'shapes': (0.95, ), 'detail': (0.999, )}
#: what --targets may hold: (what it is, low, high, low open, high open, integers only)
TARGET_RANGE = ('the confidence threshold', 0.0, 1.0, False, False, False)
METRIC = 'miou'


def segmenter(backbone, in_size=None) -> TinySegmenter:
    """Backbone, 1x1 decode head on the last map, bilinear up to 48x48 (input resized to
    ``in_size`` first when given)."""
    return TinySegmenter(backbone, ARCH['embed_dims'], NUM_CLASSES, (SIZE, SIZE), in_size)


def _vit(size):
    from mmdyn.models.backbones.vit import ViT
    m = ViT(arch=ARCH, img_size=size, patch_size=PATCH, out_indices=(ARCH['depth'] - 1, ),
            drop_path_rate=0.)
    m.init_weights()
    return m


def _aux_loss(model, labels):
    """The auxiliary heads' cross-entropy (the authors' weight per head)."""
    loss = 0.
    for logits in model.backbone.aux_logits:
        up = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear', align_corners=False)
        loss = loss + RECIPE['aux_weight'] * F.cross_entropy(up, labels)
    return loss


def make_data(scene: str = 'shapes'):
    return scenes(np.random.default_rng(123), 64, SIZE, kind=scene)


def static_flops_at(size: Tuple[int, int]) -> float:
    return float(_vit(size).static_flops(size))


def running_share(bb, label: torch.Tensor, fg: str = 'shapes') -> Dict[str, float]:
    """Share of shape (``fg``) / background tokens still running after each decision."""
    shape = F.avg_pool2d((label > 0)[:, None].float(), PATCH)[:, 0] > 0.5
    out = {}
    keys = sorted(k for k in bb.last_maps if k.startswith('keep_'))
    for side, where in ((fg, shape), ('background', ~shape)):
        for k in keys:
            out[f'running_on_{side}_{k[5:]}'] = float(bb.last_maps[k][where].mean())
        out[f'running_on_{side}'] = float(np.mean(
            [out[f'running_on_{side}_{k[5:]}'] for k in keys]))
    return out


def train_dynamic(seed: int, xi: float, val, **kw) -> Dict:
    from mmdyn.models.backbones.dovit import DoViT
    r = dict(RECIPE, **kw)
    data, gen = seeded_scenes(seed, SIZE, r['scene'])
    bb = DoViT(arch=ARCH, num_classes=NUM_CLASSES, img_size=SIZE, patch_size=PATCH,
               threshold=1.0, aux_head='conv1x1', out_indices=(ARCH['depth'] - 1, ),
               drop_path_rate=0.)
    bb.init_weights()
    model = segmenter(bb)
    fit_segmenter(model, data, r['warmup'], gen, r['batch'], r['lr'], extra_loss=_aux_loss)
    x, y = val
    with torch.no_grad():
        host_pred = model(x).argmax(1)  # threshold 1.0: the static host
    static_gflops = float(bb.last_flops.double().mean()) / 1e9
    bb.threshold = xi
    fit_segmenter(model, data, r['iters'], gen, r['batch'], r['lr'], extra_loss=_aux_loss)
    with torch.no_grad():
        pred = model(x).argmax(1)
    fg = 'objects' if r['scene'] == 'detail' else 'shapes'
    return dict(running_share(bb, y, fg), miou=mean_iou(pred, y, NUM_CLASSES),
                host_miou=mean_iou(host_pred, y, NUM_CLASSES),
                gflops=float(bb.last_flops.double().mean()) / 1e9, static_gflops=static_gflops)


def run(seed: int = 0, targets: Optional[Sequence[float]] = None, static: bool = True,
        data=None, threads: int = 1, **kw) -> Dict:
    """One seed: DoViT at each threshold xi (default: the scene's :data:`DEFAULT_TARGETS`)
    and (``static``) the ViT host on a smaller input."""
    scene = kw.get('scene', RECIPE['scene'])
    targets = DEFAULT_TARGETS[scene] if targets is None else targets
    return run_segmentation_seed(
        'dovit', seed, targets, data if data is not None else make_data(scene), train_dynamic,
        lambda size: segmenter(_vit(size), in_size=size), static_flops_at, STATIC_SIDES,
        NUM_CLASSES, RECIPE, SIZE, static, threads, **kw)


REPORT = ('seed', 'target', 'running_on_shapes', 'running_on_objects', 'running_on_background', 'miou', 'host_miou',
          'gflops', 'static_gflops', 'static_size', 'static_at_gflops', 'static_miou')
CLAIMS = {
    'tokens running on shapes > background + 0.2': (
        ('running_on_shapes', ),
        lambda p: p['running_on_shapes'] > p['running_on_background'] + 0.2),
    'tokens running on objects > 2x background (detail)': (
        ('running_on_objects', ),
        lambda p: p['running_on_objects'] > 2 * p['running_on_background']),
    **matched_claims(METRIC),
}
