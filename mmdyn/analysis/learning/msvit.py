"""MSViT learning check: fine tokens on the shapes, and accuracy per FLOP against a smaller
static input.

Task: shape / background segmentation of 48x48 scenes written in the ADE20K layout by
:func:`mmdyn.datasets.toy.make_toy_dataset` (read back from the JPEG images and PNG
annotations), predicted on the fine token grid (one 4x4 patch per fine token; soft labels: the
shape fraction of each patch). Coarse tokens are copied into their 2x2 fine positions, so a
coarse region cannot draw a shape boundary inside it: fine tokens are worth their cost on the
shapes, not on the flat background.

* Dynamic: a tiny MSViT (``S_f`` 4, ``S_c`` 8, 32 dims, 2 blocks; gate width 32 starting at
  P(fine) 0.9; L0 gate loss with target ``g*``), Adam, the gate held for the warm-up steps then
  trained with everything else.
* Static: the same ViT at ``S_f`` 4 on the input resized to the size whose FLOPs are closest to
  the dynamic model's realised FLOPs, its logits up-sampled to the fine grid, the same loss and
  the same number of steps.

Decisions oscillate around the budget during training (configs/msvit/README.md), so every
measure is the mean over the snapshots of the last ``tail_steps`` steps, not one step.

``scene='detail'`` runs the variant of :mod:`.msvit_detail` instead (in-memory scenes whose
detail is localised, 5 labels, mIoU at full resolution; ``shallow``: also the fewer-blocks host).
"""
import glob
import os.path as osp
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mmdyn.datasets.toy import ADE20K_BACKGROUND, make_toy_dataset
from . import msvit_detail
from .common import auc, matched_claims, mean_iou, num_threads, run_budgets

SIZE = 48
SF, SC = 4, 8
ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
# Adam for both; the gate held for the first 100 steps (warm-up), then trained for 400; L0 with
# a weight small enough for the segmentation gradient to compete (configs/msvit/README.md).
RECIPE = dict(steps=500, warmup=100, batch=8, lr=3e-3, gate_lr=2e-3, target=0.25,
              loss_weight=0.04, init_fine_prob=0.9, snapshot_every=25, tail_steps=100)
#: Static input sides tried when matching FLOPs (multiples of S_f).
STATIC_SIDES = tuple(range(16, SIZE + 1, SF))
#: Scene kinds this protocol runs on ('detail': :mod:`.msvit_detail`).
SCENES = ('shapes', 'detail')


def _read_split(root: str, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    files = sorted(glob.glob(osp.join(root, 'images', split, '*.jpg')))
    imgs, masks = [], []
    for f in files:
        imgs.append(cv2.imread(f, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 127.5 - 1)
        ann = f.replace(osp.join('images', split), osp.join('annotations', split))
        seg = cv2.imread(ann[:-len('.jpg')] + '.png', cv2.IMREAD_UNCHANGED)
        masks.append(seg != ADE20K_BACKGROUND[1])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks)).long()


def make_data(root: Optional[str] = None, num: int = 256, num_val: int = 64,
              scene: str = 'shapes'):
    """``((x_train, mask_train), (x_val, mask_val))`` from a written toy ADE20K set
    (``scene='detail'``: the validation scenes of :mod:`.msvit_detail`)."""
    if scene == 'detail':
        return msvit_detail.make_data()
    with tempfile.TemporaryDirectory() as tmp:
        root = root or tmp
        make_toy_dataset('ade20k', root, num=num, num_val=num_val, size=(SIZE, SIZE), seed=0)
        return _read_split(root, 'training'), _read_split(root, 'validation')


def region_cover(mask: torch.Tensor) -> torch.Tensor:
    """Shape fraction of every coarse region ``[B, hc, wc]``."""
    return F.avg_pool2d(mask[:, None].float(), SC)[:, 0]


def _seg_loss(logits_fine: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft-label cross-entropy on the fine grid (target: shape fraction of each patch)."""
    target = F.avg_pool2d(mask[:, None].float(), SF)
    logp = F.log_softmax(logits_fine, 1)
    return -(target * logp[:, 1:] + (1 - target) * logp[:, :1]).mean()


def _pixel_scores(pred_fine: torch.Tensor, mask: torch.Tensor) -> Tuple[float, float]:
    pred = pred_fine.repeat_interleave(SF, 1).repeat_interleave(SF, 2)
    return float((pred == mask).float().mean()), mean_iou(pred, mask, 2)


class _Static(torch.nn.Module):
    """The ViT host at ``S_f`` on a resized input, logits up-sampled to the fine grid."""

    def __init__(self, size: Tuple[int, int]):
        super().__init__()
        from mmdyn.models.backbones.vit import ViT
        self.size = tuple(size)
        self.vit = ViT(arch=ARCH, img_size=self.size, patch_size=SF, out_type='featmap')
        self.head = torch.nn.Conv2d(ARCH['embed_dims'], 2, 1)

    def forward(self, x):
        xs = F.interpolate(x, size=self.size, mode='bilinear', align_corners=False,
                           antialias=True) if tuple(x.shape[-2:]) != self.size else x
        out = self.head(self.vit(xs)[0])
        return F.interpolate(out, size=(SIZE // SF, SIZE // SF), mode='bilinear',
                             align_corners=False)

    def flops(self) -> float:
        return float(self.vit.static_flops(self.size))


def _batches(n: int, steps: int, batch: int, gen: torch.Generator):
    for it in range(steps):
        idx = torch.randint(0, n, (batch, ), generator=gen)
        flip = torch.rand(1, generator=gen).item() < 0.5
        yield it, idx, flip


def snapshot(m, head, val) -> Dict[str, float]:
    """Decisions and accuracy of the dynamic model on ``val`` (eval mode, real skipping)."""
    xv, sv = val
    training = m.training
    m.eval()
    with torch.no_grad():
        pred = head(m(xv)[0]).argmax(1)
        logits = m.tokenizer.logits(xv)
    fine = m.last_maps['fine'].float()
    cover = region_cover(sv)
    acc, miou = _pixel_scores(pred, sv)
    out = dict(fine_on_shapes=fine[cover > 0].mean().item(),
               fine_inside=fine[cover > 0.5].mean().item(),
               fine_on_background=fine[cover == 0].mean().item(),
               gate_auc=auc(logits[cover > 0], logits[cover == 0]),
               acc=acc, miou=miou, gflops=float(m.last_flops.double().mean()) / 1e9,
               static_gflops=float(m.static_flops((SIZE, SIZE))) / 1e9)
    m.train(training)
    return out


def train_dynamic(data, seed: int = 0, **kw) -> Dict:
    """Train the dynamic model; returns ``snapshots`` (step -> measures), ``warmup`` (the
    measures when the gate starts to learn) and ``final`` (mean over the last snapshots)."""
    from mmdyn.models.backbones.msvit import MSViT
    r = dict(RECIPE, **kw)
    (x, s), val = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = MSViT(arch=ARCH, img_size=SIZE, patch_size=SF, coarse_size=SC, out_type='featmap',
              gate_cfg=dict(hidden_dims=32, init_fine_prob=r['init_fine_prob']),
              gate_loss='l0', target=r['target'], loss_weight=r['loss_weight'])
    m.init_weights()
    head = torch.nn.Conv2d(ARCH['embed_dims'], 2, 1)
    gate = list(m.tokenizer.parameters())
    rest = [p for n, p in m.named_parameters() if not n.startswith('tokenizer.')]
    opt = torch.optim.Adam([dict(params=rest + list(head.parameters()), lr=r['lr']),
                            dict(params=gate, lr=r['gate_lr'])])
    snaps = {}
    m.train()
    for it, idx, flip in _batches(len(x), r['steps'], r['batch'], gen):
        # gate warm-up: the gate is held (no gradient) while the network learns the task
        m.gate_grad_mult = 0.0 if it < r['warmup'] else 1.0
        if it == r['warmup'] or (it > r['warmup'] and it % r['snapshot_every'] == 0):
            snaps[it] = snapshot(m, head, val)
        xb, sb = (x[idx].flip(-1), s[idx].flip(-1)) if flip else (x[idx], s[idx])
        loss = _seg_loss(head(m(xb)[0]), sb) + sum(m.aux_losses.values())
        m.aux_losses = {}
        opt.zero_grad()
        loss.backward()
        opt.step()
    snaps[r['steps']] = snapshot(m, head, val)
    tail = [v for k, v in snaps.items() if k >= r['steps'] - r['tail_steps']]
    final = {k: float(np.mean([t[k] for t in tail])) for k in tail[0]}
    return dict(snapshots=snaps, warmup=snaps[r['warmup']], final=final, model=m.eval(),
                head=head)


def train_static(data, size: Tuple[int, int], seed: int = 0, **kw) -> Dict:
    """The static host on a ``size`` input, trained with the same loss and steps."""
    r = dict(RECIPE, **kw)
    (x, s), (xv, sv) = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = _Static(size)
    model.vit.init_weights()
    opt = torch.optim.Adam(model.parameters(), lr=r['lr'])
    model.train()
    scores = []
    for it, idx, flip in _batches(len(x), r['steps'], r['batch'], gen):
        if it >= r['steps'] - r['tail_steps'] and it % r['snapshot_every'] == 0:
            scores.append(_static_scores(model, xv, sv))
        xb, sb = (x[idx].flip(-1), s[idx].flip(-1)) if flip else (x[idx], s[idx])
        loss = _seg_loss(model(xb), sb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores.append(_static_scores(model, xv, sv))
    return dict(size=tuple(size), gflops=model.flops() / 1e9,
                acc=float(np.mean([a for a, _ in scores])),
                miou=float(np.mean([b for _, b in scores])))


def _static_scores(model, xv, sv):
    model.eval()
    with torch.no_grad():
        pred = model(xv).argmax(1)
    model.train()
    return _pixel_scores(pred, sv)


def static_flops_at(size: Tuple[int, int]) -> float:
    """Backbone FLOPs (MACs) of the static host on a ``size`` input."""
    return _Static(size).flops()


DEFAULT_TARGETS = (0.25, )
#: what --targets may hold: (what it is, low, high, low open, high open, integers only)
TARGET_RANGE = ('the gate target g*', 0.0, 1.0, True, True, False)


def run(seed: int = 0, targets: Optional[Sequence[float]] = None, static: bool = True,
        data=None, threads: int = 1, scene: str = 'shapes', shallow: bool = False,
        **kw) -> Dict:
    """One seed: the dynamic model at each budget ``g*`` and (``static``) the static host at the
    matched input size. Returns ``{'points': [...], ...}``, one point per budget.
    ``scene='detail'``: :func:`.msvit_detail.run` (``shallow``: also the fewer-blocks host)."""
    if scene == 'detail':
        return msvit_detail.run(seed, targets or msvit_detail.DEFAULT_TARGETS, static, data,
                                threads, shallow, **kw)
    if scene != 'shapes' or shallow:
        raise ValueError(f'msvit learning check: scene {scene!r}'
                         f'{" with the fewer-blocks host" if shallow else ""} is not run')
    targets = targets or DEFAULT_TARGETS
    data = data or make_data()

    def dynamic(t):
        dyn = train_dynamic(data, seed=seed, target=t, **kw)
        return dict(dyn['final'], fine_on_shapes_warmup=dyn['warmup']['fine_on_shapes'],
                    gate_auc_warmup=dyn['warmup']['gate_auc'])

    def static_at(size):
        st = train_static(data, size, seed=seed, **kw)
        st.pop('size')
        return st

    with num_threads(threads):
        return run_budgets('msvit', seed, targets, dynamic, static_at if static else None,
                           static_flops_at, STATIC_SIDES)


#: Columns of the tool's table.
REPORT = ('seed', 'target', 'fine_on_shapes', 'fine_on_objects', 'fine_on_background',
          'fine_ratio', 'gate_auc', 'miou', 'miou_warmup', 'gflops', 'static_gflops',
          'static_size', 'static_at_gflops', 'static_miou', 'shallow_depths',
          'shallow_at_gflops', 'shallow_miou')
#: The fewer-blocks host (the tool's ``--shallow``; detail scenes only).
train_shallow = msvit_detail.train_shallow
METRIC = 'miou'
#: The claims checked per seed and budget: ``{name: (keys read, test)}``.
CLAIMS = {
    'fine tokens on shapes > background + 0.2': (
        ('fine_on_shapes', ), lambda p: p['fine_on_shapes'] > p['fine_on_background'] + 0.2),
    'fine tokens on objects > 2x background (detail)': (
        ('fine_on_objects', ), lambda p: p['fine_on_objects'] > 2 * p['fine_on_background']),
    'gate AUC shape vs background > 0.65': (('gate_auc', ), lambda p: p['gate_auc'] > 0.65),
    **matched_claims(METRIC),
    'miou >= fewer-blocks host (full input)': (
        ('shallow_miou', ), lambda p: p['miou'] >= p['shallow_miou']),
}
