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
  * ``CONFIG [--checkpoint CKPT]``: runs the model with every exit on the config's validation
    (or ``--split test``) data and collects the same (``--save-preds`` keeps them).

Examples::

    python tools/analysis_tools/dvt_thresholds.py configs/dvt/dvt_deit-s_8xb128_in1k.py \\
        --checkpoint dvt.pth --budget 2.5 --plot work_dirs/dvt_acc_vs_gflops.png
    python tools/analysis_tools/dvt_thresholds.py --preds preds.npz --budget 2.5 --out th.json
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

GEOMETRIC_QS = tuple(p / 20 for p in range(1, 60))


# ---------------------------------------------------------------------------- evaluation
def exit_indices(conf: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Exit of each image: the first ``k`` with ``conf[k] >= thresholds[k]`` (last otherwise)."""
    k_num, n = conf.shape
    out = np.full(n, k_num - 1, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    for k, t in enumerate(thresholds):
        hit = left & (conf[k] >= t)
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
            t = float(c[min(m, len(c)) - 1])
        out.append(t)
        left &= ~(conf[k] >= t)
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
    cnt = np.searchsorted(-c_sorted, -np.asarray(cands), side='right')
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
        raise ValueError(f'budget {budget} is below the first exit\'s cost {cum_flops[0]}')
    qs = np.linspace(0, 1, num_candidates)
    cands = [np.unique(np.concatenate([np.quantile(conf[k], qs), [0.0, 1.0]]))
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
    d = np.load(path)
    if 'scores' in d:
        scores = d['scores']
        conf = scores.max(-1)
        correct = scores.argmax(-1) == d['labels'][None]
    else:
        conf, correct = d['conf'], d['correct'].astype(bool)
    return dict(conf=conf, correct=correct, exit_gflops=np.asarray(d['exit_gflops'], float))


def collect_from_config(config: str, checkpoint: Optional[str] = None, split: str = 'val',
                        cfg_options: Optional[dict] = None, max_batches: Optional[int] = None
                        ) -> Dict:
    """Run the config's model with every exit on its ``split`` data; per-exit softmax outputs."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner, load_checkpoint

    import mmdyn  # noqa: F401
    from mmdyn.models.utils.dynamic import full_compute
    from mmdyn.registry import MODELS
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    loader = Runner.build_dataloader(cfg.get(f'{split}_dataloader'))
    scores, labels = [], []
    with torch.no_grad(), full_compute(model):
        for i, data in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            for s in model.test_step(data):
                scores.append(s.exit_scores.numpy())
                labels.append(int(s.gt_label[0]))
    scores = np.stack(scores, axis=1)  # [K, N, C]
    labels = np.asarray(labels)
    return dict(conf=scores.max(-1), correct=scores.argmax(-1) == labels[None],
                exit_gflops=np.asarray(model.exit_flops(), float) / 1e9, scores=scores,
                labels=labels, thresholds_file=cfg.model.get('thresholds_file'))


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
def parse_args(argv=None):
    p = argparse.ArgumentParser(description='DVT thresholds for a FLOPs budget')
    p.add_argument('config', nargs='?', help='DVT config (to run the model on held-out data)')
    p.add_argument('--checkpoint', help='checkpoint of the config\'s model')
    p.add_argument('--split', default='val', choices=['val', 'test', 'train'])
    p.add_argument('--max-batches', type=int, default=None)
    p.add_argument('--preds', help='npz with per-exit predictions instead of a config')
    p.add_argument('--save-preds', help='write the collected per-exit predictions (npz)')
    p.add_argument('--budget', type=float, required=True, help='mean GFLOPs per image')
    p.add_argument('--out', help='JSON to write (default: the config\'s model.thresholds_file)')
    p.add_argument('--plot', help='PNG of accuracy vs GFLOPs over a range of budgets')
    p.add_argument('--num-budgets', type=int, default=12)
    p.add_argument('--cfg-options', nargs='+', default=None,
                   help='key=value overrides of the config (python literals)')
    return p.parse_args(argv)


def _parse_options(opts):
    if not opts:
        return None
    import ast
    out = {}
    for o in opts:
        k, v = o.split('=', 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if (args.preds is None) == (args.config is None):
        print('give either a config or --preds', file=sys.stderr)
        return 2
    if args.preds:
        data = load_preds(args.preds)
        default_out = None
    else:
        data = collect_from_config(args.config, args.checkpoint, args.split,
                                   _parse_options(args.cfg_options), args.max_batches)
        default_out = data.get('thresholds_file')
        if args.save_preds:
            np.savez(args.save_preds, scores=data['scores'], labels=data['labels'],
                     exit_gflops=data['exit_gflops'])
    out = args.out or default_out
    if not out:
        print('no --out given and the config has no model.thresholds_file', file=sys.stderr)
        return 2
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
