"""MSViT learns where fine tokens pay off, on the project's generated ADE20K scenes.

A tiny MSViT (``S_f = 4``, ``S_c = 8``) with a 1x1 segmentation head on the fine token grid is
trained for a few hundred steps on scenes written by ``mmdyn.datasets.toy`` (``make_toy_dataset``,
real ADE20K layout: textured shapes on nearly flat backgrounds, read back from the written JPEG
images and PNG annotations) to tell shape pixels from background pixels, with the L0 gate loss.
Coarse tokens are copied into their 2x2 fine positions (appendix E.1), so a coarse region cannot
draw a shape boundary inside it: fine tokens are worth their cost on the shapes, not on the flat
background. The gate is trained only through the segmentation loss (straight-through) and the
gate loss; nothing sets its weights by hand.

Region labels on the 8x8 coarse grid: *shape* = the region holds shape pixels (any), *inside* =
more than half of it is shape, *background* = no shape pixel.
"""
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdyn.datasets.toy import ADE20K_BACKGROUND, make_toy_dataset
from mmdyn.models.backbones.msvit import MSViT

SIZE = 48
SF, SC = 4, 8


def _read_split(root, split):
    """Images in [-1, 1] (RGB, NCHW) and 0/1 shape masks of one split of the written data."""
    files = sorted(glob.glob(osp.join(root, 'images', split, '*.jpg')))
    imgs, masks = [], []
    for f in files:
        imgs.append(cv2.imread(f, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 127.5 - 1)
        ann = f.replace(osp.join('images', split), osp.join('annotations', split))
        seg = cv2.imread(ann[:-len('.jpg')] + '.png', cv2.IMREAD_UNCHANGED)
        masks.append(seg != ADE20K_BACKGROUND[1])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks)).long()


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('msvit_toy_ade20k'))
    make_toy_dataset('ade20k', root, num=256, num_val=64, size=(SIZE, SIZE), seed=0)
    return _read_split(root, 'training'), _read_split(root, 'validation')


def auc(pos, neg):
    """Probability that a random positive scores above a random negative (ties count half)."""
    d = pos[:, None] - neg[None, :]
    return ((d > 0).double().mean() + 0.5 * (d == 0).double().mean()).item()


def gate_auc(m, x, shape_mask):
    """AUC of the gate logits for telling shape regions from background regions."""
    with torch.no_grad():
        logits = m.tokenizer.logits(x)
    cover = F.avg_pool2d(shape_mask[:, None].float(), SC)[:, 0]
    return auc(logits[cover > 0], logits[cover == 0])


def region_fine_ratios(fine, shape_mask):
    """Fraction of fine regions among shape / inside / background regions."""
    cover = F.avg_pool2d(shape_mask[:, None].float(), SC)[:, 0]
    fine = fine.float()
    return (fine[cover > 0].mean().item(), fine[cover > 0.5].mean().item(),
            fine[cover == 0].mean().item())


# Adam for both; the gate held for the first 100 steps (warm-up), then trained for 400; L0 with
# g* = 0.25 (the shapes touch about 45 % of the regions, so the gate must choose) and a weight
# small enough for the segmentation gradient to compete (the L0 gradient of one region is
# lambda / (B * regions), the segmentation one a loss change of the same order per region).
RECIPE = dict(steps=500, warmup=100, batch=8, lr=3e-3, gate_lr=2e-3, target=0.25,
              loss_weight=0.04, init_fine_prob=0.9)


def train(scenes, seed=0, log=None, **kw):
    r = dict(RECIPE, **kw)
    (x, s), _ = scenes
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = MSViT(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2), img_size=SIZE,
              patch_size=SF, coarse_size=SC, out_type='featmap',
              gate_cfg=dict(hidden_dims=32, init_fine_prob=r['init_fine_prob']),
              gate_loss='l0', target=r['target'], loss_weight=r['loss_weight'])
    m.init_weights()
    head = torch.nn.Conv2d(32, 2, 1)
    gate = list(m.tokenizer.parameters())
    rest = [p for n, p in m.named_parameters() if not n.startswith('tokenizer.')]
    opt = torch.optim.Adam([dict(params=rest + list(head.parameters()), lr=r['lr']),
                            dict(params=gate, lr=r['gate_lr'])])
    m.train()
    for it in range(r['steps']):
        # gate warm-up: the gate is held (no gradient) while the network learns the task
        m.gate_grad_mult = 0.0 if it < r['warmup'] else 1.0
        if log is not None and it in log:
            log[it] = snapshot(m, head, scenes[1])
        idx = torch.randint(0, len(x), (r['batch'], ), generator=gen)
        xb, sb = x[idx], s[idx]
        if torch.rand(1, generator=gen).item() < 0.5:
            xb, sb = xb.flip(-1), sb.flip(-1)
        # soft labels on the fine grid: the shape fraction of every 4x4 fine patch
        target = F.avg_pool2d(sb[:, None].float(), SF)
        logp = F.log_softmax(head(m(xb)[0]), 1)
        seg = -(target * logp[:, 1:] + (1 - target) * logp[:, :1]).mean()
        loss = seg + sum(m.aux_losses.values())
        m.aux_losses = {}
        opt.zero_grad()
        loss.backward()
        opt.step()
    if log is not None and r['steps'] in log:
        log[r['steps']] = snapshot(m, head, scenes[1])
    return m.eval(), head


def snapshot(m, head, val):
    """Fine ratios (shape / inside / background), gate AUC and pixel accuracy on ``val``."""
    xv, sv = val
    training = m.training
    m.eval()
    with torch.no_grad():
        pred = head(m(xv)[0]).argmax(1)
    acc = (pred.repeat_interleave(SF, 1).repeat_interleave(SF, 2) == sv).float().mean().item()
    out = region_fine_ratios(m.last_maps['fine'], sv) + (gate_auc(m, xv, sv), acc)
    m.train(training)
    return out


def test_gate_learns_fine_on_shapes_coarse_on_background(scenes):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log = {RECIPE['warmup']: None, RECIPE['steps']: None}
        train(scenes, log=log)
    finally:
        torch.set_num_threads(threads)
    # before the gate is trained (end of the warm-up): every region fine, the untrained gate's
    # logits barely rank shape regions above background ones
    on0, inside0, off0, auc0, _ = log[RECIPE['warmup']]
    on, inside, off, auc1, acc = log[RECIPE['steps']]
    print(f'before: fine on shape {on0:.3f} / background {off0:.3f}, gate AUC {auc0:.3f}; '
          f'after: fine on shape {on:.3f} (inside {inside:.3f}) / background {off:.3f}, '
          f'gate AUC {auc1:.3f}, pixel accuracy {acc:.3f}')
    assert on0 == off0 == 1.0  # the gate starts fine everywhere
    assert acc > 0.9
    # fine tokens on the shapes, coarse ones on the flat background (seed 0: 0.47 vs 0.10)
    assert on - off > 0.3 and inside - off > 0.3 and off < 0.2, (on, inside, off)
    # ... and the gate learned it: its logits now rank shape regions above background ones
    # (seed 0: AUC 0.60 -> 0.77)
    assert auc1 > 0.7 and auc1 - auc0 > 0.1, (auc0, auc1)
