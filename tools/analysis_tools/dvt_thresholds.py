"""Confidence thresholds of a DVT cascade for an average-FLOPs budget (Sec. 3.3 of the paper).

From the per-exit softmax outputs of a held-out set, find ``eta_1..eta_{K-1}`` that maximise
the accuracy of early-exit inference (an image stops at the first exit whose top probability
reaches its threshold; the last exit takes the rest) subject to the mean realised FLOPs being at
most the budget. Writes the thresholds as JSON where the DVT config reads them
(``model.thresholds_file``), and plots accuracy versus GFLOPs over a range of budgets.

Solver: exhaustive coordinate ascent over candidate threshold values (quantiles of each exit's
confidences), started from the public code's fixed geometric exit schedules (the exit shares
``q**k`` normalised, ``q = p / 20`` for ``p = 1..59``), from random exit shares and from "all exit
first"; a move is accepted only if it stays within the budget and raises the accuracy (or keeps
it and lowers the FLOPs). The best geometric schedule within the budget is one of the starts, so
the result is never worse than that baseline on the same data.

Inputs, either
  * ``--preds file.npz`` with ``scores`` ``[K, N, C]`` (softmax per exit) and ``labels`` ``[N]``
    (or ``conf`` and ``correct`` ``[K, N]``) and ``exit_gflops`` ``[K]`` (each exit alone), or
  * ``CONFIG [--checkpoint CKPT]``: runs the model with every exit on calibration images and
    collects the same (``--save-preds`` keeps them). By default (``--split calib``) as the
    public code calibrates: a random subset (``--num-images``, default 50000, seeded) of the
    config's *training* images with the training pipeline's crop and flip only (its RandAugment,
    random erasing, colour jitter... dropped; batch Mixup / CutMix never run outside training),
    so the thresholds are not tuned on the split the accuracy is reported on;
    ``--split val|test|train`` reads that split's loader as the config defines it.

Examples::

    python tools/analysis_tools/dvt_thresholds.py configs/dvt/dvt_deit-s_8xb128_in1k.py \\
        --checkpoint dvt.pth --budget 2.5 --plot work_dirs/dvt_acc_vs_gflops.png
    python tools/analysis_tools/dvt_thresholds.py --preds preds.npz --budget 2.5 --out th.json

For throughput at a chosen early-exit share (``--exit-shares``): thresholds under which exactly
those shares of ``benchmark.py``'s generated batch stop at exits 1..K-1 (with random weights
confidences are arbitrary, so they are read off this model on these images; the weights are
saved for ``benchmark.py --checkpoint``)::

    python tools/analysis_tools/dvt_thresholds.py configs/dvt/dvt-2exit_t2t-vit-12_8xb128_in1k.py \\
        --exit-shares 0.5 --generated 128 --device cuda --save-checkpoint work_dirs/dvt_bench.pth
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

GEOMETRIC_QS = tuple(p / 20 for p in range(1, 60))
#: the largest float32 below 1 (the model's MAX_EXIT_THRESHOLD): the highest threshold that
#: still lets images stop; a threshold of 1.0 means "nobody stops at this exit", as in the model
MAX_EXIT_THRESHOLD = float(np.nextafter(np.float32(1.), np.float32(0.)))


def _stops(conf: np.ndarray, t: float) -> np.ndarray:
    """The model's rule (``mmdyn.models.classifiers.dvt.exits_at``): ``conf >= t``, nobody
    for ``t >= 1``."""
    if t >= 1.:
        return np.zeros(np.shape(conf), dtype=bool)
    return conf >= t


# ---------------------------------------------------------------------------- evaluation
def exit_indices(conf: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Exit of each image: the first ``k`` with ``conf[k] >= thresholds[k]`` (last otherwise;
    a threshold of 1.0 stops nobody, as in the model)."""
    k_num, n = conf.shape
    out = np.full(n, k_num - 1, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    for k, t in enumerate(thresholds):
        hit = left & _stops(conf[k], t)
        out[hit] = k
        left &= ~hit
    return out


def evaluate(conf, correct, cum_flops, thresholds) -> Dict:
    """Accuracy, mean cumulative FLOPs and exit shares of early exit with ``thresholds``."""
    conf = np.asarray(conf)
    ex = exit_indices(conf, thresholds)
    idx = np.arange(conf.shape[1])
    acc = float(np.asarray(correct)[ex, idx].mean())
    flops = float(np.asarray(cum_flops, dtype=np.float64)[ex].mean())
    shares = np.bincount(ex, minlength=conf.shape[0]) / conf.shape[1]
    return dict(accuracy=acc, gflops=flops, exit_shares=shares.tolist(),
                thresholds=[float(t) for t in thresholds])


# ---------------------------------------------------------------------------- baseline
def schedule_thresholds(conf: np.ndarray, shares: Sequence[float]) -> List[float]:
    """Thresholds that make (about) ``shares[k] * N`` images exit at exit ``k``, chosen greedily
    among the images still running, by confidence (the public code's calibration rule)."""
    k_num, n = conf.shape
    left = np.ones(n, dtype=bool)
    out = []
    for k in range(k_num - 1):
        m = int(np.floor(n * shares[k]))
        c = np.sort(conf[k][left])[::-1]
        if m <= 0 or len(c) == 0:
            t = 1.0  # (almost) nobody stops here
        else:
            t = min(float(c[min(m, len(c)) - 1]), MAX_EXIT_THRESHOLD)
        out.append(t)
        left &= ~_stops(conf[k], t)
    return out


def geometric_shares(q: float, k_num: int) -> np.ndarray:
    w = np.array([q ** (k + 1) for k in range(k_num)], dtype=np.float64)
    return w / w.sum()


def geometric_baseline(conf, correct, cum_flops, budget: float,
                       qs: Sequence[float] = GEOMETRIC_QS) -> Optional[Dict]:
    """Best of the public code's geometric schedules whose mean FLOPs fit ``budget``."""
    best = None
    for q in qs:
        r = evaluate(conf, correct, cum_flops,
                     schedule_thresholds(conf, geometric_shares(q, conf.shape[0])))
        if r['gflops'] <= budget + 1e-12 and _better(r, best):
            best = dict(r, q=q)
    return best


# ---------------------------------------------------------------------------- solver
def _better(r, best) -> bool:
    return best is None or (r['accuracy'], -r['gflops']) > (best['accuracy'], -best['gflops'])


def _coordinate_curve(conf, correct, cum_flops, thresholds, k, cands):
    """Correct-image counts and mean FLOPs of every candidate value of threshold ``k`` with the
    other thresholds fixed (vectorised over the candidates)."""
    n = conf.shape[1]
    th = list(thresholds)
    th[k] = np.inf  # nobody stops at k: where each image goes instead
    e_no = exit_indices(conf, th)
    idx = np.arange(n)
    reach = e_no > k  # images not stopped before k
    base_correct = correct[e_no, idx].astype(np.float64)
    base_flops = cum_flops[e_no]
    c_k = conf[k][reach]
    d_correct = correct[k][reach].astype(np.float64) - base_correct[reach]
    d_flops = cum_flops[k] - base_flops[reach]
    order = np.argsort(-c_k, kind='stable')
    c_sorted = c_k[order]
    cs_correct = np.concatenate([[0.], np.cumsum(d_correct[order])])
    cs_flops = np.concatenate([[0.], np.cumsum(d_flops[order])])
    # number of reaching images with conf >= t, for each candidate t
    cands = np.asarray(cands)
    cnt = np.searchsorted(-c_sorted, -cands, side='right')
    cnt = np.where(cands >= 1., 0, cnt)  # a threshold of 1 stops nobody
    acc = base_correct.sum() + cs_correct[cnt]
    fl = (base_flops.sum() + cs_flops[cnt]) / n
    return acc, fl


def solve_thresholds(conf, correct, cum_flops, budget: float, num_candidates: int = 101,
                     num_random: int = 32, max_rounds: int = 20, seed: int = 0) -> Dict:
    """Thresholds maximising accuracy with mean FLOPs <= ``budget`` (see the module doc).

    Returns the :func:`evaluate` dict of the solution (plus ``baseline``: the best geometric
    schedule within the budget, or None). Raises ``ValueError`` when even "everyone stops at
    the first exit" costs more than the budget.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    cum_flops = np.asarray(cum_flops, dtype=np.float64)
    k_num = conf.shape[0]
    if cum_flops[0] > budget + 1e-12:
        from mmdyn.utils.errors import UserValueError
        raise UserValueError(f'budget {budget} is below the first exit\'s cost '
                             f'{cum_flops[0]:.4g} GFLOPs')
    qs = np.linspace(0, 1, num_candidates)
    cands = [np.unique(np.concatenate([np.minimum(np.quantile(conf[k], qs), MAX_EXIT_THRESHOLD),
                                       [0.0, MAX_EXIT_THRESHOLD, 1.0]]))
             for k in range(k_num - 1)]
    starts = [[0.0] * (k_num - 1)]
    baseline = geometric_baseline(conf, correct, cum_flops, budget)
    if baseline is not None:
        starts.append(baseline['thresholds'])
    for q in GEOMETRIC_QS:
        starts.append(schedule_thresholds(conf, geometric_shares(q, k_num)))
    rng = np.random.default_rng(seed)
    for _ in range(num_random):
        starts.append(schedule_thresholds(conf, rng.dirichlet(np.ones(k_num))))
    results = [evaluate(conf, correct, cum_flops, s) for s in starts]
    feasible = [r for r in results if r['gflops'] <= budget + 1e-12]
    feasible.sort(key=lambda r: (r['accuracy'], -r['gflops']), reverse=True)
    best = None
    n = conf.shape[1]
    for start in feasible[:8]:  # refine the best few starts
        cur = start
        for _ in range(max_rounds):
            improved = False
            for k in range(k_num - 1):
                acc, fl = _coordinate_curve(conf, correct, cum_flops, cur['thresholds'], k,
                                            cands[k])
                ok = fl <= budget + 1e-12
                if not ok.any():
                    continue
                # best accuracy, then fewest FLOPs, among the feasible candidate values
                order = np.lexsort((fl, -acc))
                j = order[ok[order]][0]
                if (acc[j] / n, -fl[j]) > (cur['accuracy'], -cur['gflops']) and \
                        (acc[j] / n > cur['accuracy'] + 1e-15 or fl[j] < cur['gflops'] - 1e-12):
                    th = list(cur['thresholds'])
                    th[k] = float(cands[k][j])
                    cur, improved = evaluate(conf, correct, cum_flops, th), True
            if not improved:
                break
        if _better(cur, best):
            best = cur
    best = dict(best)
    best['baseline'] = baseline
    best['budget_gflops'] = float(budget)
    return best


# ---------------------------------------------------------------------------- data
def load_preds(path: str) -> Dict:
    """The per-exit predictions of an npz (``--save-preds``): ``scores`` ``[K, N, C]`` and
    ``labels``, or ``conf`` / ``correct`` ``[K, N]``; and ``exit_gflops`` ``[K]``."""
    from mmdyn.utils.errors import UserValueError
    if not os.path.isfile(path):
        raise UserValueError(f'--preds {path} does not exist')
    try:
        d = np.load(path)
        keys = set(d.files)
    except Exception as e:  # noqa: BLE001
        raise UserValueError(f'--preds {path} is not an npz file ({type(e).__name__})') from None
    if 'scores' in keys and 'labels' in keys:
        scores = d['scores']
        conf = scores.max(-1)
        correct = scores.argmax(-1) == d['labels'][None]
    elif {'conf', 'correct'} <= keys:
        conf, correct = d['conf'], d['correct'].astype(bool)
    else:
        raise UserValueError(f'--preds {path} holds {sorted(keys)}: needs scores and labels, or '
                             'conf and correct (see --save-preds)')
    if 'exit_gflops' not in keys:
        raise UserValueError(f'--preds {path} has no exit_gflops')
    exit_gflops = np.asarray(d['exit_gflops'], float).reshape(-1)
    if conf.ndim != 2 or correct.shape != conf.shape or len(exit_gflops) != conf.shape[0]:
        raise UserValueError(f'--preds {path}: predictions of shape {tuple(conf.shape)} (exits x '
                             f'images) and {len(exit_gflops)} exit_gflops do not match')
    return dict(conf=conf, correct=correct, exit_gflops=exit_gflops)


#: training-pipeline transforms the calibration images do without (the public code calibrates
#: on training images with random-resized crops and flips only)
CALIBRATION_DROPS = ('RandAugment', 'AutoAugment', 'RandomErasing', 'ColorJitter', 'Lighting',
                     'GaussianBlur', 'RandomGrayscale', 'Solarize', 'Posterize', 'Cutout')


def calibration_pipeline(train_pipeline: Sequence[dict]) -> List[dict]:
    """The training pipeline without its photometric / erasing augmentations
    (:data:`CALIBRATION_DROPS`): loading, crops, flips, resizes and packing stay."""
    return [dict(t) for t in train_pipeline
            if str(t.get('type', '')).split('.')[-1] not in CALIBRATION_DROPS]


def _calibration_loader(cfg, seed: int) -> dict:
    """The config's training loader on :func:`calibration_pipeline`, shuffled with ``seed``
    (its first images are a random subset), no repeated augmentation."""
    import copy
    loader = copy.deepcopy(cfg.get('train_dataloader'))
    if loader is None:
        from mmdyn.utils.errors import UserValueError
        raise UserValueError('the config has no train_dataloader to calibrate on (give '
                             '--split val)')
    loader.dataset.pipeline = calibration_pipeline(loader.dataset.get('pipeline', []))
    loader.sampler = dict(type='DefaultSampler', shuffle=True, seed=seed)
    loader.pop('batch_sampler', None)
    return loader


def collect_from_config(config: str, checkpoint: Optional[str] = None, split: str = 'calib',
                        cfg_options: Optional[dict] = None, max_batches: Optional[int] = None,
                        num_images: Optional[int] = None, seed: int = 0) -> Dict:
    """Run the config's model with every exit on ``split`` images (``'calib'``: see the
    module doc; at most ``num_images``, default 50000 for ``'calib'``); per-exit softmax
    outputs."""
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import mmdyn  # noqa: F401
    from mmdyn.models.utils.dynamic import full_compute
    from mmdyn.registry import MODELS
    from mmdyn.utils.cli import check_checkpoint, load_checked_weights, load_config
    cfg = load_config(config, cfg_options)
    ckpt = check_checkpoint(checkpoint) if checkpoint else None
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    if checkpoint:  # another model's weights: one line
        load_checked_weights(model, checkpoint, ckpt)
    del ckpt
    model.eval()
    if split == 'calib':
        loader = Runner.build_dataloader(_calibration_loader(cfg, seed), seed=seed)
        num_images = 50000 if num_images is None else num_images
    else:
        loader = Runner.build_dataloader(cfg.get(f'{split}_dataloader'))
    scores, labels = [], []
    with torch.no_grad(), full_compute(model):
        for i, data in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            if num_images is not None and len(labels) >= num_images:
                break
            for s in model.test_step(data):
                scores.append(s.exit_scores.numpy())
                labels.append(int(s.gt_label[0]))
    if num_images is not None:
        scores, labels = scores[:num_images], labels[:num_images]
    scores = np.stack(scores, axis=1)  # [K, N, C]
    labels = np.asarray(labels)
    return dict(conf=scores.max(-1), correct=scores.argmax(-1) == labels[None],
                exit_gflops=np.asarray(model.exit_flops(), float) / 1e9, scores=scores,
                labels=labels, thresholds_file=cfg.model.get('thresholds_file'))


# ---------------------------------------------------------------------------- exit shares
def thresholds_for_shares(conf: np.ndarray, shares: Sequence[float]) -> List[float]:
    """Thresholds under which exactly ``round(shares[k] * N)`` of the ``N`` images stop at exit
    ``k`` (``k < K-1``; the rest run to the last exit), by the model's rule: each threshold lies
    half-way (in float32) between the confidence of the last image that must stop and the next
    one among the images still running, so float noise of the order of that gap does not move
    an image across it. Raises ``ValueError`` for shares that do not fit or ties that cannot be
    split."""
    from mmdyn.utils.errors import UserValueError
    conf = np.asarray(conf, dtype=np.float32)
    k_num, n = conf.shape
    if len(shares) != k_num - 1:
        raise UserValueError(f'{k_num} exits take {k_num - 1} exit shares, got '
                             f'{len(shares)}')
    counts = [int(round(float(s) * n)) for s in shares]
    if any(s < 0 for s in shares) or sum(counts) > n:
        raise UserValueError(f'exit shares must be >= 0 and sum to at most 1, got '
                             f'{list(shares)}')
    left = np.ones(n, dtype=bool)
    out = []
    for k, m in enumerate(counts):
        c = np.sort(conf[k][left])[::-1]
        if m == 0:
            t = 1.0
        elif m == len(c):
            t = 0.0
        else:
            hi, lo = c[m - 1], c[m]
            if not hi > lo:
                raise UserValueError(f'exit {k}: images {m} and {m + 1} by confidence tie at '
                                     f'{float(hi)!r}; cannot make exactly {m} stop')
            t = np.float32((np.float64(hi) + np.float64(lo)) / 2)
            if not lo < t <= hi:
                t = hi
            t = min(float(t), MAX_EXIT_THRESHOLD)
        out.append(float(t))
        left &= ~_stops(conf[k], out[-1])
    return out


def calibrate_generated(config: str, shares: Sequence[float], num: int,
                        shape: Optional[Sequence[int]] = None, checkpoint: Optional[str] = None,
                        cfg_options: Optional[dict] = None, device: str = 'cpu',
                        seed: int = 0) -> Dict:
    """Thresholds making the requested shares of ``benchmark.py``'s generated batch stop early.

    Builds the config's model the way ``tools/analysis_tools/benchmark.py`` does (eval mode;
    random weights drawn after ``torch.manual_seed(seed)`` unless ``checkpoint``), feeds it the
    same ``num`` generated images (``generated_batch(model, shape, num)``, seed 0: the batch
    that ``benchmark.py --batch num`` times), collects every exit's confidence with
    :func:`full_compute`, solves :func:`thresholds_for_shares`, then runs the real early exit
    on that batch with them and reports the realised exit shares and FLOPs per image.
    Returns a dict with ``thresholds``, ``exit_shares`` (realised), ``requested_shares``,
    ``gflops`` (mean realised), ``cumulative_gflops``, ``min_gap`` (smallest confidence gap
    around a threshold), ``model`` (the model, its thresholds set)."""
    import torch

    import mmdyn  # noqa: F401
    from mmdyn.analysis.complexity import (build_model_from_cfg, default_img_shape,
                                           generated_batch, load_config)
    from mmdyn.models.utils.dynamic import full_compute
    cfg = load_config(config, cfg_options)
    torch.manual_seed(seed)
    model = build_model_from_cfg(cfg, device=device, checkpoint=checkpoint)
    if not hasattr(model, 'set_thresholds'):
        raise ValueError(f'{config} does not build a DVT model')
    shape = tuple(shape) if shape else default_img_shape(cfg, model)
    inputs, _ = generated_batch(model, shape, num)
    with torch.no_grad():
        with full_compute(model):
            _, _, all_logits = model.early_exit(inputs)
        conf = np.stack([a.float().softmax(-1).max(-1).values.cpu().numpy()
                         for a in all_logits])
        th = thresholds_for_shares(conf, shares)
        model.set_thresholds(th)
        _, exit_idx, _ = model.early_exit(inputs)
    exit_idx = exit_idx.cpu().numpy()
    flops = model.last_flops.cpu().numpy().astype(np.float64)
    gaps = []
    left = np.ones(conf.shape[1], dtype=bool)
    for k, t in enumerate(th):
        if 0. < t < 1.:
            c = conf[k][left]
            gaps.append(float(np.abs(c - t).min()))
        left &= ~_stops(conf[k], t)
    cum = np.cumsum(np.asarray(model.exit_flops(), dtype=np.float64)) / 1e9
    return dict(thresholds=th, requested_shares=[float(s) for s in shares],
                exit_shares=(np.bincount(exit_idx, minlength=conf.shape[0])
                             / conf.shape[1]).tolist(),
                exit_index=exit_idx.tolist(), flops_per_image=flops.tolist(),
                gflops=float(flops.mean() / 1e9), cumulative_gflops=cum.tolist(),
                min_gap=min(gaps) if gaps else None, num_images=int(conf.shape[1]),
                shape=[int(v) for v in shape], model=model,
                thresholds_file=cfg.model.get('thresholds_file'))


# ---------------------------------------------------------------------------- plot
def sweep(conf, correct, cum_flops, budgets: Sequence[float]) -> List[Dict]:
    out = []
    for b in budgets:
        r = solve_thresholds(conf, correct, cum_flops, b)
        out.append(r)
    return out


def plot_curves(rows: List[Dict], cum_flops, exit_acc, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot([r['gflops'] for r in rows], [100 * r['accuracy'] for r in rows], 'k-o', ms=3,
            label='DVT, solved thresholds')
    base = [r['baseline'] for r in rows if r['baseline'] is not None]
    if base:
        ax.plot([b['gflops'] for b in base], [100 * b['accuracy'] for b in base], '--',
                color='gray', label='geometric exit schedule')
    ax.plot(cum_flops, 100 * np.asarray(exit_acc), 's', color='tab:red',
            label='each exit (no early exit)')
    ax.set_xlabel('GFLOPs / image')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.grid(alpha=.3)
    ax.legend()
    shares = np.array([r['exit_shares'] for r in rows])
    for k in range(shares.shape[1]):
        ax2.plot([r['budget_gflops'] for r in rows], 100 * shares[:, k], '-o', ms=3,
                 label=f'exit {k + 1}')
    ax2.set_xlabel('budget (GFLOPs / image)')
    ax2.set_ylabel('images exiting (%)')
    ax2.grid(alpha=.3)
    ax2.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI
PROG = 'dvt_thresholds.py'


def arg_error(prog, msg):
    """``prog: error: msg`` on stderr, exit status 2 (:func:`mmdyn.utils.cli.arg_error`)."""
    from mmdyn.utils.cli import arg_error as one_line
    one_line(prog, msg)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='DVT thresholds for a FLOPs budget')
    p.add_argument('config', nargs='?', help='DVT config (to run the model on calibration '
                   'images)')
    p.add_argument('--checkpoint', help='checkpoint of the config\'s model')
    p.add_argument('--split', default='calib', choices=['calib', 'val', 'test', 'train'],
                   help='calib (default): a random subset of the training images, crop and '
                   'flip only, as the public code; or a loader of the config')
    p.add_argument('--num-images', type=int, default=None,
                   help='at most this many images (default: 50000 with --split calib, all '
                   'otherwise)')
    p.add_argument('--max-batches', type=int, default=None)
    p.add_argument('--preds', help='npz with per-exit predictions instead of a config')
    p.add_argument('--save-preds', help='write the collected per-exit predictions (npz)')
    p.add_argument('--budget', type=float, help='mean GFLOPs per image')
    p.add_argument('--exit-shares', type=float, nargs='+', default=None,
                   help='instead of --budget: shares of images stopping at exits 1..K-1 of '
                   'benchmark.py\'s generated batch (for throughput at a chosen early-exit '
                   'share; needs CONFIG)')
    p.add_argument('--generated', type=int, default=128,
                   help='with --exit-shares: images of the generated batch (= benchmark.py '
                   '--batch)')
    p.add_argument('--shape', type=int, default=None, help='with --exit-shares: input side')
    p.add_argument('--device', default='cpu', help='with --exit-shares: cpu or cuda')
    p.add_argument('--seed', type=int, default=0,
                   help='the calibration subset (--split calib); with --exit-shares and no '
                   '--checkpoint: the random weights')
    p.add_argument('--save-checkpoint',
                   help='with --exit-shares: write the weights used (the random ones without '
                   '--checkpoint), for benchmark.py --checkpoint')
    p.add_argument('--out', help='JSON to write (default: the config\'s model.thresholds_file)')
    p.add_argument('--plot', help='PNG of accuracy vs GFLOPs over a range of budgets')
    p.add_argument('--num-budgets', type=int, default=12)
    p.add_argument('--cfg-options', nargs='+', default=None,
                   help='key=value overrides of the config (python literals)')
    args = p.parse_args(argv)
    for option, value in (('--num-images', args.num_images), ('--max-batches', args.max_batches),
                          ('--generated', args.generated), ('--num-budgets', args.num_budgets)):
        if value is not None and value < 1:
            arg_error(PROG, f'{option} must be >= 1, got {value}')
    from mmdyn.utils.cli import check_output_path
    for option, path, exts in (('--out', args.out, ('.json', )),
                               ('--plot', args.plot, ('.png', '.jpg', '.pdf', '.svg')),
                               ('--save-checkpoint', args.save_checkpoint, None)):
        if path:
            check_output_path('dvt_thresholds.py', option, path, 'file', exts)
    return args


def _parse_options(opts):
    if not opts:
        return None
    import ast
    out = {}
    for o in opts:
        if '=' not in o:
            from mmdyn.utils.errors import UserValueError
            raise UserValueError(f'--cfg-options takes KEY=VALUE, got {o!r}')
        k, v = o.split('=', 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main_exit_shares(args) -> int:
    import torch
    if args.config is None:
        arg_error(PROG, '--exit-shares needs a config')
    shape = (args.shape, args.shape) if args.shape else None
    res = calibrate_generated(args.config, args.exit_shares, args.generated, shape,
                              args.checkpoint, _parse_options(args.cfg_options), args.device,
                              args.seed)
    model = res.pop('model')
    out = args.out or res.get('thresholds_file')
    if not out:
        arg_error(PROG, 'no --out given and the config has no model.thresholds_file')
    k_num = len(res['cumulative_gflops'])
    want = [int(round(s * res['num_images'])) for s in args.exit_shares]
    got = [int(round(s * res['num_images'])) for s in res['exit_shares'][:k_num - 1]]
    if want != got:
        print(f'realised exit counts {got} differ from the requested {want}', file=sys.stderr)
        return 1
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(res, f, indent=2)
    if args.save_checkpoint:
        os.makedirs(osp.dirname(osp.abspath(args.save_checkpoint)), exist_ok=True)
        torch.save({'state_dict': {k: v.cpu() for k, v in model.state_dict().items()}},
                   args.save_checkpoint)
        print(f'weights written to {args.save_checkpoint}')
    print(json.dumps({k: res[k] for k in ('thresholds', 'exit_shares', 'gflops',
                                          'cumulative_gflops', 'min_gap')}))
    print(f'thresholds written to {out}')
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('dvt_thresholds.py'):
        return _main(args)


def _main(args) -> int:
    if args.exit_shares is not None:
        return main_exit_shares(args)
    if args.budget is None:
        arg_error(PROG, 'give --budget (or --exit-shares)')
    if (args.preds is None) == (args.config is None):
        arg_error(PROG, 'give either a config or --preds')
    if args.preds:
        data = load_preds(args.preds)
        default_out = None
    else:
        data = collect_from_config(args.config, args.checkpoint, args.split,
                                   _parse_options(args.cfg_options), args.max_batches,
                                   args.num_images, args.seed)
        default_out = data.get('thresholds_file')
        if args.save_preds:
            np.savez(args.save_preds, scores=data['scores'], labels=data['labels'],
                     exit_gflops=data['exit_gflops'])
    out = args.out or default_out
    if not out:
        arg_error(PROG, 'no --out given and the config has no model.thresholds_file')
    conf, correct = data['conf'], data['correct']
    cum = np.cumsum(data['exit_gflops'])
    res = solve_thresholds(conf, correct, cum, args.budget)
    res['exit_gflops'] = [float(f) for f in data['exit_gflops']]
    res['cumulative_gflops'] = [float(f) for f in cum]
    res['exit_accuracy'] = [float(c.mean()) for c in correct]
    res['num_images'] = int(conf.shape[1])
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(res, f, indent=2)
    print(json.dumps({k: res[k] for k in ('thresholds', 'accuracy', 'gflops', 'exit_shares')}))
    print(f'thresholds written to {out}')
    if args.plot:
        budgets = np.linspace(cum[0], cum[-1], args.num_budgets)
        rows = sweep(conf, correct, cum, budgets)
        plot_curves(rows, cum, res['exit_accuracy'], args.plot)
        print(f'plot written to {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
