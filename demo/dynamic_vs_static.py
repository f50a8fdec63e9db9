"""Dynamic versus static in a few minutes on a CPU: DGE on generated scenes.

    python demo/dynamic_vs_static.py [--work-dir work_dirs/quickstart] [--budgets 0.2 0.4]

The recipe of the DGE paper's dense tasks, in miniature (``mmdyn.analysis.learning.dge``): a
tiny PVT learns 5-label segmentation of 64x64 generated scenes for 800 iterations. The default
``--scene detail`` scenes are what dynamic compute is for: a large flat background and a few
small objects whose class only a fine texture tells (a smaller input cannot resolve it);
``--scene shapes`` gives large textured shapes, where a smaller input loses little. Then

* the **static** host trains 400 more iterations as it is;
* the **dynamic** model, the same host with dynamic grained encoders (only the gates are new),
  trains the same 400 iterations with the budget loss, once per budget gamma;
* the static host made as cheap as the first budget in the obvious way (a smaller input, the
  size whose FLOPs are closest) trains all 1200 iterations.

Then, on 64 new scenes: mIoU, realised backbone GFLOPs per image (what ran, per image) and CPU
latency per image for every model (a table), the dynamic model's decisions over validation
images next to its predictions (``decisions.png``), and mIoU against GFLOPs (``miou_vs_gflops.png``).
Everything goes to ``--work-dir``; the terminal shows a progress bar and the summary.
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work-dir', default='work_dirs/quickstart')
    p.add_argument('--budgets', type=float, nargs='+', default=[0.2, 0.4],
                   help='DGE budgets gamma (Eq. 7 query ratios) in (0, 1]')
    p.add_argument('--scene', default='detail', choices=['detail', 'shapes'],
                   help='generated scenes (mmdyn.analysis.learning.common.scenes)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='intra-op threads (default 1)')
    p.add_argument('--warmup', type=int, default=800, help='static warm-up iterations')
    p.add_argument('--iters', type=int, default=400,
                   help='iterations after the warm-up (static and every DGE budget)')
    args = p.parse_args(argv)
    if args.warmup < 1 or args.iters < 1:
        p.error('--warmup and --iters must be at least 1')
    if not all(0 < b <= 1 for b in args.budgets):
        p.error(f'--budgets must lie in (0, 1], got {args.budgets}')
    if args.threads < 1:
        p.error('--threads must be at least 1')
    from mmdyn.utils.cli import check_output_path
    check_output_path(p.prog, '--work-dir', args.work_dir, 'dir')
    return args


def latency_ms(model, x, repeats=3):
    """Median CPU time per image (batch 1) over ``repeats`` passes of ``x``."""
    times = []
    with torch.no_grad():
        model(x[:1])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(len(x)):
                model(x[i:i + 1])
            times.append((time.perf_counter() - t0) / len(x))
    return 1e3 * float(np.median(times))


def evaluate(model, val, name, gflops_fn):
    from mmdyn.analysis.learning.common import mean_iou
    from mmdyn.analysis.learning.dge import NUM_CLASSES
    x, y = val
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return dict(model=name, miou=mean_iou(pred, y, NUM_CLASSES), gflops=gflops_fn(),
                latency_ms=latency_ms(model, x[:16]))


def draw_decisions(model, val, path, n=4):
    """Per validation image: the image, the fraction of the DGE layers that gave each pixel's
    region the finest queries, the prediction and the ground truth."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmdyn.analysis.learning.common import paint
    from mmdyn.analysis.learning.dge import SIZE
    x, y = val[0][:n], val[1][:n]
    with torch.no_grad():
        pred = model(x).argmax(1)
    maps = model.backbone.last_maps
    fine = torch.stack([paint((m == 1).float(), (SIZE, SIZE)) for m in maps.values()]).mean(0)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n))
    titles = ('image', 'finest queries (share of layers)', 'prediction', 'ground truth')
    for i in range(n):
        img = ((x[i].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)[..., ::-1]
        panels = (img, fine[i].numpy(), pred[i].numpy(), y[i].numpy())
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, **({} if j == 0 else dict(cmap='magma' if j == 1 else 'tab10',
                                                   vmin=0, vmax=1 if j == 1 else 9)))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_points(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r in rows:
        static = r['model'].startswith('static')
        ax.scatter(r['gflops'] * 1e3, r['miou'], marker='s' if static else 'o',
                   color='tab:gray' if static else 'tab:blue')
        ax.annotate(r['model'], (r['gflops'] * 1e3, r['miou']), fontsize=7,
                    xytext=(4, 4), textcoords='offset points')
    ax.set_xlabel('realised backbone MFLOPs (MACs) per image')
    ax.set_ylabel('mIoU (64 validation scenes)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from mmdyn.analysis.learning import dge
    from mmdyn.analysis.learning.common import (closest_static_size, fit_segmenter,
                                                num_threads)
    os.makedirs(args.work_dir, exist_ok=True)
    console = Console()
    r = dict(dge.RECIPE, warmup=args.warmup, iters=args.iters)
    total = r['warmup'] + r['iters'] * (1 + len(args.budgets)) + r['warmup'] + r['iters']
    val = dge.make_data(args.scene)
    rows = []
    t0 = time.time()
    with num_threads(args.threads), Progress(console=console, transient=True) as bar:
        task = bar.add_task('warm-up: static host', total=total)
        step = lambda: bar.advance(task)  # noqa: E731
        host = dge.train_host(args.seed, warmup=r['warmup'], iters=r['iters'], scene=args.scene,
                              progress=step)
        # the static host trains on, from the same point and batches as every dynamic model
        static = copy.deepcopy(host['model'])
        torch.set_rng_state(host['rng_state'])
        gen = torch.Generator()
        gen.set_state(host['gen_state'])
        bar.update(task, description='static host: 400 more iterations')
        fit_segmenter(static, host['data'], r['iters'], gen, r['batch'], r['lr'], progress=step)
        rows.append(evaluate(static, val, 'static PVT',
                             lambda: float(static.backbone.static_flops((dge.SIZE,) * 2)) / 1e9))
        models = {}
        for gamma in args.budgets:
            bar.update(task, description=f'DGE, budget {gamma}: 400 iterations')
            m = dge.finetune(host, gamma, progress=step)
            models[gamma] = m
            rows.append(evaluate(m, val, f'DGE gamma={gamma}',
                                 lambda: float(m.backbone.last_flops.double().mean()) / 1e9))
        # the static host made as cheap as the first budget's DGE in the obvious way: a smaller
        # input (the size whose FLOPs are closest), trained as long as the others in all
        size, _ = closest_static_size(dge.static_flops_at, rows[1]['gflops'] * 1e9,
                                      dge.STATIC_SIDES)
        bar.update(task, description=f'static PVT at {size[0]}x{size[1]}: '
                   f'{r["warmup"] + r["iters"]} iterations')
        from mmdyn.models.backbones.dge import DGEPVT
        torch.manual_seed(args.seed)
        small = dge.segmenter(DGEPVT(dge=False, **dge.HOST), in_size=size)
        small.backbone.init_weights()
        gen = torch.Generator().manual_seed(args.seed)
        fit_segmenter(small, host['data'], r['warmup'] + r['iters'], gen, r['batch'], r['lr'],
                      progress=step)
        rows.append(evaluate(small, val, f'static PVT, {size[0]}x{size[1]} input',
                             lambda: float(small.backbone.static_flops(size)) / 1e9))
    # decisions of the first budget, re-run on the validation images
    first = models[args.budgets[0]]
    pic = osp.join(args.work_dir, 'decisions.png')
    draw_decisions(first, val, pic)
    plot = osp.join(args.work_dir, 'miou_vs_gflops.png')
    plot_points(rows, plot)
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(rows=rows, seed=args.seed, scene=args.scene, seconds=time.time() - t0), f, indent=1)

    table = Table(title=f'Dynamic vs static on generated {args.scene} scenes ({time.time() - t0:.0f} s)')
    for col in ('model', 'mIoU', 'GFLOPs / image', 'vs static', 'latency / image'):
        table.add_column(col, justify='left' if col == 'model' else 'right')
    base = rows[0]['gflops']
    for row in rows:
        table.add_row(row['model'], f"{100 * row['miou']:.1f}", f"{row['gflops']:.5f}",
                      f"{row['gflops'] / base:.2f}x", f"{row['latency_ms']:.2f} ms")
    console.print(table)
    console.print(f'decisions: {pic}\nmIoU vs GFLOPs: {plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
