"""MSViT learning check on scenes whose detail is localised (``scene='detail'``).

Task: 5-label segmentation (background + the 4 texture classes) of 48x48 scenes of
:func:`.common.detail_scene` (2-4 small objects on a nearly flat background, their class given
only by a texture at half the sampling rate), generated in memory, scored by mIoU at the full
48x48 resolution. A coarse MSViT token embeds its 8x8 region area-resized to 4x4 (the mean of
each 2x2 pixel block), which turns every one of these textures into its flat mean tone: only a
fine token can tell the class, and only on the objects does that matter.

* Dynamic: a tiny MSViT (``S_f`` 4, ``S_c`` 8: 6x6 regions, 12x12 fine tokens; 32 dims,
  2 blocks; gate MLP of width ``gate_hidden`` starting at P(fine) ``init_fine_prob``; L0 gate
  loss with target ``g*``) with a 1x1 head on the fine grid, its logits up-sampled to 48x48, pixel
  cross-entropy. ``warmup`` steps with the gate held (no gradient reaches it: mostly fine,
  some regions coarse by the Gumbel noise), shared by every budget, then ``iters`` steps per
  budget with the gate trained (its own learning rate ``gate_lr``).
* Static: the same ViT at ``S_f`` on the input resized (anti-aliased) to the size whose FLOPs
  are closest to MSViT's realised FLOPs, logits up-sampled to 48x48, trained ``warmup + iters``
  steps with the same loss; optionally (``shallow``) the ViT on the full input with fewer
  blocks.

Measured on 64 new scenes (eval mode: deterministic decisions, real skipping): the share of
object pixels and of background pixels whose region is fine, the gate's AUC (logits of regions
touching an object against the others), the mIoU and the realised FLOPs per image. Decisions
oscillate around the budget, so every measure (both models) is the mean over the validation
snapshots of the last ``tail_steps`` steps.
"""
import copy
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .common import TinySegmenter, auc, mean_iou, num_threads, paint, run_budgets, scenes

SIZE = 48
SF, SC = 4, 8
NUM_CLASSES = 5
ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
# The gate held at P(fine) 0.9 for the warm-up (the network learns the textures: mIoU about
# 0.7 at its end), then trained with the L0 hinge, lambda 0.1, at the network's learning rate
# (what did not work: docs/learning_checks.md).
RECIPE = dict(warmup=200, iters=300, batch=8, lr=2e-3, gate_lr=2e-3, gate_loss='l0',
              loss_weight=0.1, init_fine_prob=0.9, gate_hidden=16, snapshot_every=25,
              tail_steps=100, num_train=512)
DEFAULT_TARGETS = (0.1, 0.2)
#: Static input sides tried when matching FLOPs (multiples of S_f).
STATIC_SIDES = tuple(range(16, SIZE + 1, SF))


def segmenter(backbone, in_size=None) -> TinySegmenter:
    """Backbone (its last map on the fine grid), 1x1 head, bilinear up to 48x48; the input is
    resized to ``in_size`` first when given."""
    return TinySegmenter(backbone, backbone.embed_dims, NUM_CLASSES, (SIZE, SIZE), in_size)


def make_data(scene: str = 'detail'):
    """The validation scenes (the training scenes are drawn per seed)."""
    return scenes(np.random.default_rng(123), 64, SIZE, kind=scene)


def _vit(size, depth=ARCH['depth']):
    from mmdyn.models.backbones.vit import ViT
    m = ViT(arch=dict(ARCH, depth=depth), img_size=size, patch_size=SF, out_type='featmap',
            drop_path_rate=0.)
    m.init_weights()
    return m


def static_flops_at(size: Tuple[int, int], depth: int = ARCH['depth']) -> float:
    """Backbone FLOPs (MACs) of the static ViT on a ``size`` input."""
    return float(_vit(size, depth).static_flops(size))


def snapshot(model: TinySegmenter, val) -> Dict[str, float]:
    """Decisions (MSViT), mIoU and FLOPs of ``model`` on ``val`` (eval mode, real skipping)."""
    x, y = val
    training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    out = dict(miou=mean_iou(pred, y, NUM_CLASSES))
    bb = model.backbone
    if hasattr(bb, 'tokenizer'):
        with torch.no_grad():
            logits = bb.tokenizer.logits(x)
        fine = paint(bb.last_maps['fine'].float(), (SIZE, SIZE))
        obj = y > 0
        cover = F.avg_pool2d(obj[:, None].float(), SC)[:, 0]
        out.update(fine_on_objects=float(fine[obj].mean()),
                   fine_on_background=float(fine[~obj].mean()),
                   fine_ratio=float(bb.last_stats['fine_ratio'].mean()),
                   gate_auc=auc(logits[cover > 0], logits[cover == 0]),
                   gflops=float(bb.last_flops.double().mean()) / 1e9,
                   static_gflops=float(bb.static_flops((SIZE, SIZE))) / 1e9)
    model.train(training)
    return out


def _fit(model, opt, data, steps: int, gen: torch.Generator, r: Dict, val=None):
    """``steps`` optimiser steps of pixel cross-entropy (+ MSViT's gate loss); with ``val``,
    snapshots every ``snapshot_every`` steps within the last ``tail_steps`` and at the end,
    returned as their mean."""
    x_train, y_train = data
    bb = model.backbone
    snaps = []
    model.train()
    for it in range(steps):
        if val is not None and it >= steps - r['tail_steps'] and it % r['snapshot_every'] == 0:
            snaps.append(snapshot(model, val))
        idx = torch.randint(0, len(x_train), (r['batch'], ), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        aux = getattr(bb, 'aux_losses', None)
        if aux:  # the gate loss, while the gate learns (its parameters untouched before)
            if bb.gate_grad_mult > 0:
                loss = loss + sum(aux.values())
            bb.aux_losses = {}
        opt.zero_grad()
        loss.backward()
        opt.step()
    if val is None:
        return None
    snaps.append(snapshot(model, val))
    return {k: float(np.mean([s[k] for s in snaps])) for k in snaps[0]}


def _train_data(seed: int, r: Dict):
    return scenes(np.random.default_rng(seed), r['num_train'], SIZE, kind='detail')


def _msvit(r: Dict, target: float = 0.5):
    """The MSViT segmenter (gate loss at ``g* = target``) and its optimiser (the gate at its
    own learning rate)."""
    from mmdyn.models.backbones.msvit import MSViT
    bb = MSViT(arch=ARCH, img_size=SIZE, patch_size=SF, coarse_size=SC, out_type='featmap',
               drop_path_rate=0.,
               gate_cfg=dict(hidden_dims=r['gate_hidden'], init_fine_prob=r['init_fine_prob']),
               gate_loss=r['gate_loss'], target=target, loss_weight=r['loss_weight'])
    bb.init_weights()
    model = segmenter(bb)
    gate = list(bb.tokenizer.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith('backbone.tokenizer.')]
    opt = torch.optim.Adam([dict(params=rest, lr=r['lr']), dict(params=gate, lr=r['gate_lr'])])
    return model, opt


def warm_up(seed: int, **kw) -> Dict:
    """MSViT with the gate held for ``warmup`` steps; what every budget continues from."""
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    data = _train_data(seed, r)
    gen = torch.Generator().manual_seed(seed)
    model, opt = _msvit(r)
    model.backbone.gate_grad_mult = 0.0
    _fit(model, opt, data, r['warmup'], gen, r)
    return dict(state=copy.deepcopy(model.state_dict()), opt=copy.deepcopy(opt.state_dict()),
                data=data, recipe=r, gen_state=gen.get_state(), rng_state=torch.get_rng_state())


def train_dynamic(host: Dict, target: float, val) -> Dict:
    """From the warm-up: the gate trained ``iters`` steps with the L0 loss at ``g* = target``;
    the measures averaged over the last snapshots (and those at the end of the warm-up)."""
    r = host['recipe']
    model, opt = _msvit(r, target)
    # the gate loss's own parameters (gBaS priors) start from their initialisation at g*
    model.load_state_dict({k: v for k, v in host['state'].items()
                           if not k.startswith('backbone.gate_loss.')}, strict=False)
    # a copy: Adam updates the loaded moments in place, and every budget starts from the same
    opt.load_state_dict(copy.deepcopy(host['opt']))
    torch.set_rng_state(host['rng_state'])
    gen = torch.Generator()
    gen.set_state(host['gen_state'])
    bb = model.backbone
    warm = snapshot(model, val)
    bb.gate_grad_mult = 1.0
    out = _fit(model, opt, host['data'], r['iters'], gen, r, val)
    out.update(miou_warmup=warm['miou'], gate_auc_warmup=warm['gate_auc'],
               fine_on_objects_warmup=warm['fine_on_objects'])
    return dict(out, model=model)


def train_static(seed: int, val, size: Tuple[int, int], depth: int = ARCH['depth'],
                 **kw) -> Dict:
    """The static ViT (``depth`` blocks) on a ``size`` input, ``warmup + iters`` steps."""
    r = dict(RECIPE, **kw)
    torch.manual_seed(seed)
    data = _train_data(seed, r)
    gen = torch.Generator().manual_seed(seed)
    model = segmenter(_vit(size, depth), in_size=size)
    opt = torch.optim.Adam(model.parameters(), lr=r['lr'])
    out = _fit(model, opt, data, r['warmup'] + r['iters'], gen, r, val)
    return dict(miou=out['miou'], gflops=static_flops_at(size, depth) / 1e9)


def shallow_depth(target_flops: float) -> int:
    """The number of blocks (fewer than the host's) whose full-input FLOPs are closest to
    ``target_flops``."""
    return min(range(1, ARCH['depth']),
               key=lambda d: abs(static_flops_at((SIZE, SIZE), d) - target_flops))


def train_shallow(seed: int, val, target_flops: float, **kw) -> Dict:
    """The other obvious cheap host: the ViT on the full input with fewer blocks
    (:func:`shallow_depth`), ``warmup + iters`` steps; keys prefixed ``shallow_``."""
    depth = shallow_depth(target_flops)
    st = train_static(seed, val, (SIZE, SIZE), depth, **kw)
    return dict(shallow_depths=str(depth), shallow_at_gflops=st['gflops'],
                shallow_miou=st['miou'])


def run(seed: int = 0, targets: Sequence[float] = DEFAULT_TARGETS, static: bool = True,
        data=None, threads: int = 1, shallow: bool = False, **kw) -> Dict:
    """One seed: one warm-up, MSViT at each budget ``g*`` and (``static``) the ViT on the
    smaller input whose FLOPs match; ``shallow``: also the ViT with fewer blocks. A static
    host that two budgets share (same size or depth) is trained once."""
    val = data if data is not None else make_data()
    cache = {}

    def once(key, fn):
        if key not in cache:
            cache[key] = fn()
        return dict(cache[key])

    with num_threads(threads):
        host = warm_up(seed, **kw)

        def dynamic(t):
            d = train_dynamic(host, t, val)
            d.pop('model')
            if shallow:
                depth = shallow_depth(d['gflops'] * 1e9)
                d.update(once(('shallow', depth),
                              lambda: train_shallow(seed, val, d['gflops'] * 1e9, **kw)))
            return d

        def static_at(size):
            return once(('static', tuple(size)), lambda: train_static(seed, val, size, **kw))

        return run_budgets('msvit', seed, targets, dynamic, static_at if static else None,
                           static_flops_at, STATIC_SIDES)
