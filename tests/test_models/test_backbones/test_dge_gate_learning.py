"""DGE issue item 7, "a gate that learns", on the project's generated segmentation scenes.

Protocol (the paper's dense-prediction recipe in miniature: a trained host fine-tuned with DGE):

1. a tiny two-stage static PVT (``DGEPVT(dge=False)``, 3 blocks) with a 1x1 segmentation head
   on both stages is trained for 800 iterations (batch 8, AdamW lr 3e-3, cross-entropy) on 512
   64x64 scenes of :func:`mmdyn.datasets.toy.draw_scene` (the generator behind the toy ADE20K
   set: a flat background and 1-3 textured shapes; labels: background + the 4 shape classes);
2. its weights load into the same host with DGE (the paper's gate: ``Linear(C, K)`` on each
   region's average token, Phi = {1, 2, 4}, ``init_prob`` 0.95, budget gamma = 0.2 of Eq. 7
   (``budget_convention='paper'``), lambda = 1; only the gates are new) and training goes on for 400 iterations with the
   budget loss (gates at the same lr);
3. on 32 new scenes: the fraction of shape pixels and of background pixels whose query is at
   granularity 1 (the finest), averaged over the three DGE layers (a region's granularity is
   painted over its pixels; a region on a shape border counts for both sides).

Measured, seeds 0-7: shapes 0.24-0.43 vs background 0.02-0.13 (3x-12x); seed 0 (tested)
0.39 vs 0.13. The numbers, the per-layer split and what a cold start does are in
configs/dge/README.md, "A gate that learns".
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.datasets.toy import draw_scene
from mmdyn.models.backbones.dge import DGEPVT

SIZE = 64
NUM_CLASSES = 5  # background + the four shape classes
TINY = dict(embed_dims=[16, 32], depths=[2, 1], num_heads=[1, 2], mlp_ratios=[2, 2],
            sr_ratios=[4, 2])


def scenes(rng, n):
    """``n`` generated scenes: normalised images and labels (0 background, 1..4 the shape
    classes)."""
    imgs, labels = [], []
    for _ in range(n):
        img, instances = draw_scene(rng, (SIZE, SIZE), num_objects=(1, 3))
        lbl = np.zeros((SIZE, SIZE), np.int64)
        for inst in instances:
            lbl[inst.mask] = inst.cls + 1
        imgs.append(img)
        labels.append(lbl)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(np.stack(labels))


class TinySegmenter(nn.Module):
    """The backbone's two stages, concatenated at stride 4, a 1x1 classifier, bilinear up."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(sum(TINY['embed_dims']), NUM_CLASSES, 1)

    def forward(self, x):
        f0, f1 = self.backbone(x)
        f = torch.cat([f0, F.interpolate(f1, size=f0.shape[-2:], mode='nearest')], 1)
        return F.interpolate(self.head(f), size=x.shape[-2:], mode='bilinear',
                             align_corners=False)


def fit(model, param_groups, data, iters, gen, budget=False):
    x_train, y_train = data
    opt = torch.optim.AdamW(param_groups, lr=3e-3, weight_decay=0.)
    model.train()
    for _ in range(iters):
        idx = torch.randint(0, len(x_train), (8, ), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        if budget:
            loss = loss + model.backbone.aux_losses.pop('loss_budget')
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def paint(region_map):
    """``[B, gh, gw]`` per-region values -> ``[B, SIZE, SIZE]`` (the maps divide evenly)."""
    s = SIZE // region_map.shape[-1]
    return region_map.repeat_interleave(s, 1).repeat_interleave(s, 2)


def mean_iou(pred, y):
    return float(np.mean([float(((pred == c) & (y == c)).sum() / ((pred == c) | (y == c)).sum())
                          for c in range(NUM_CLASSES)]))


def train_static_then_dge(seed, warmup=800, iters=400, gamma=0.2):
    """Steps 1-3 of the module docstring (one thread: the numbers were measured so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        data = scenes(np.random.default_rng(seed), 512)
        gen = torch.Generator().manual_seed(seed)
        host = dict(arch=TINY, patch_sizes=(4, 2), pretrain_img_size=SIZE, drop_path_rate=0.,
                    out_indices=(0, 1))
        static = TinySegmenter(DGEPVT(dge=False, **host))
        static.backbone.init_weights()
        fit(static, static.parameters(), data, warmup, gen)

        # gamma is an Eq. 7 budget here (the protocol was calibrated with it; the authors'
        # whole-model ratio, the default, makes 0.2 a much tighter budget)
        model = TinySegmenter(DGEPVT(granularities=(1, 2, 4), budget=gamma,
                                     budget_convention='paper', **host))
        model.backbone.init_weights()
        missing, unexpected = model.load_state_dict(static.state_dict(), strict=False)
        assert not unexpected and missing and all('.gate.' in k for k in missing), missing
        fit(model, model.parameters(), data, iters, gen, budget=True)

        x, y = scenes(np.random.default_rng(123), 32)
        with torch.no_grad():
            static_pred = static(x).argmax(1)
            pred = model(x).argmax(1)
    finally:
        torch.set_num_threads(threads)
    bb = model.backbone
    fine = torch.stack([paint(m == 1).float() for m in bb.last_maps.values()]).mean(0)
    shape = y > 0
    return dict(on_shapes=float(fine[shape].mean()), on_background=float(fine[~shape].mean()),
                static_miou=mean_iou(static_pred, y), miou=mean_iou(pred, y),
                beta=float(bb.last_stats['budget_ratio'].mean()),
                flops_ratio=float(bb.last_stats['flops_ratio'].mean()),
                layers=sorted(bb.last_maps))


def test_gate_puts_fine_queries_on_textured_shapes():
    """Seed 0, measured: fine on 0.39 of the shape pixels vs 0.13 of the background; eval
    beta 0.27, realised FLOPs 0.47 of the static host; mIoU 0.40 (the static host after its
    800 iterations: 0.54)."""
    r = train_static_then_dge(seed=0)
    assert r['layers'] == ['stage0.block0', 'stage0.block1', 'stage1.block0']
    assert r['on_shapes'] > 2 * r['on_background'], r
    assert r['on_shapes'] > r['on_background'] + 0.15, r
    # the gates meet the budget: a fraction of the static host's compute ...
    assert r['beta'] < 0.35 and r['flops_ratio'] < 0.6, r
    # ... and still segments (predicting background everywhere: mIoU about 0.16)
    assert r['static_miou'] > 0.45 and r['miou'] > 0.3, r
