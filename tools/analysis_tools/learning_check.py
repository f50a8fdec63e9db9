"""Does a method's gate learn where to spend compute, and does it pay off per FLOP?

    python tools/analysis_tools/learning_check.py msvit --seeds 5
    python tools/analysis_tools/learning_check.py dge --seeds 5 --shallow
    python tools/analysis_tools/learning_check.py dge --seeds 5 --scene shapes --targets 0.2 0.35

Trains tiny models on the generated scenes (by default the 'detail' scenes, where the papers'
accuracy-per-FLOP claim applies, for every method that has them: dge, dit, dovit, msvit; DVT
has its own classification scenes) (CPU, one thread per run), prints one row per seed
and budget (decisions on shapes vs background, the dynamic model's metric and realised GFLOPs,
the static host's at the matched input size) and how many seeds each claim holds for, and
writes ``learning_<method>_detail.json`` and ``learning_<method>_detail.png`` (``--scene
shapes`` and dvt: ``learning_<method>.json`` / ``.png``; metric against GFLOPs: the static
points, the dynamic points per budget) to ``--work-dir``. The protocols are in
``mmdyn/analysis/learning/``; the numbers are in each method's README.
"""
import argparse
import json
import os
import os.path as osp
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('method', help='one of: dge, dit, dovit, dvt, msvit')
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..N-1 (default 5)')
    p.add_argument('--targets', type=float, nargs='+',
                   help="budgets (the method's target; default: the protocol's)")
    p.add_argument('--no-static', action='store_true',
                   help='skip the static host at matched FLOPs (decisions only)')
    p.add_argument('--scene', choices=('shapes', 'detail'),
                   help="generated scenes: 'detail' (small objects whose class only a fine "
                   "texture tells; the default for dge, dit, dovit, msvit) or 'shapes' (the toy "
                   "datasets' large textured shapes; dvt's own scenes)")
    p.add_argument('--shallow', action='store_true',
                   help='also the static host with fewer blocks on the full input (dge; msvit '
                   'with --scene detail)')
    p.add_argument('--work-dir', default='work_dirs/learning_check')
    return p.parse_args(argv)


def plot(points, path, method, metric):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6))
    dyn = [(p['gflops'] * 1e3, p[metric]) for p in points]
    ax.scatter(*zip(*dyn), label=f'{method} (dynamic)', marker='o')
    st = [(p['static_at_gflops'] * 1e3, p[f'static_{metric}']) for p in points
          if f'static_{metric}' in p]
    if st:
        ax.scatter(*zip(*st), label='static host, smaller input', marker='s')
    sh = [(p['shallow_at_gflops'] * 1e3, p[f'shallow_{metric}']) for p in points
          if f'shallow_{metric}' in p]
    if sh:
        ax.scatter(*zip(*sh), label='static host, fewer blocks', marker='^')
    ax.set_xlabel('realised MFLOPs (MACs) per image, backbone')
    ax.set_ylabel(f'{metric} (validation)')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fail(msg: str):
    """An input error: one line on stderr, exit status 2 (as every mmdyn tool)."""
    from mmdyn.utils.cli import arg_error
    arg_error('learning_check', msg)


def check_targets(proto, method: str, targets) -> None:
    """``--targets`` against the protocol's ``TARGET_RANGE``, before any training."""
    rng = getattr(proto, 'TARGET_RANGE', None)
    if targets is None or rng is None:
        return
    what, lo, hi, lo_open, hi_open, integer = rng
    for t in targets:
        if (lo is not None and (t < lo or (lo_open and t == lo))) or \
                (hi is not None and (t > hi or (hi_open and t == hi))) or \
                (integer and t != int(t)):
            span = ('(' if lo_open else '[') + f'{lo:g}, ' + \
                ('inf)' if hi is None else f'{hi:g}' + (')' if hi_open else ']'))
            fail(f'--targets {t:g}: {method} takes {what}, '
                 f'{"an integer " if integer else ""}in {span}')


def main(argv=None):
    args = parse_args(argv)
    from mmdyn.analysis.learning import get_protocol
    from mmdyn.analysis.learning.common import table
    try:
        proto = get_protocol(args.method)
    except ValueError as e:
        fail(str(e))
    if args.seeds < 1:
        fail('--seeds must be at least 1')
    check_targets(proto, args.method, args.targets)
    if osp.exists(args.work_dir) and not osp.isdir(args.work_dir):
        fail(f'--work-dir {args.work_dir} is a file, not a directory')
    os.makedirs(args.work_dir, exist_ok=True)
    kw = {} if args.targets is None else dict(targets=args.targets)
    scenes = getattr(proto, 'SCENES', ('shapes', ))
    if args.scene is None:
        args.scene = 'detail' if 'detail' in scenes else 'shapes'
    if args.scene != 'shapes':
        if args.scene not in scenes:
            fail(f'{args.method} has no {args.scene!r} scenes')
        kw['scene'] = args.scene
    if args.shallow:
        if not hasattr(proto, 'train_shallow'):
            fail(f'{args.method} has no fewer-blocks host')
        if args.method == 'msvit' and args.scene != 'detail':
            fail('msvit runs the fewer-blocks host on the detail scenes only (--scene detail)')
        kw['shallow'] = True
    data = proto.make_data(**({} if args.scene == 'shapes' else dict(scene=args.scene)))
    points = []
    for seed in range(args.seeds):
        t0 = time.time()
        res = proto.run(seed=seed, static=not args.no_static, data=data, **kw)
        points += res['points']
        keys = [k for k in proto.REPORT if any(k in p for p in points)]
        print(f'seed {seed} ({time.time() - t0:.0f} s):', flush=True)
        print(table(res['points'], keys), flush=True)
    print('\nall seeds:')
    print(table(points, keys))
    held = {}
    for name, (needs, fn) in proto.CLAIMS.items():
        ok = [bool(fn(p)) for p in points if all(k in p for k in needs)]
        if ok:
            held[name] = f'{sum(ok)} of {len(ok)}'
            print(f'{name}: {held[name]}')
    suffix = '' if args.scene == 'shapes' else f'_{args.scene}'
    out = osp.join(args.work_dir, f'learning_{args.method}{suffix}')
    with open(out + '.json', 'w') as f:
        json.dump(dict(method=args.method, scene=args.scene, points=points, claims=held), f, indent=1)
    plot(points, out + '.png', args.method, proto.METRIC)
    print(f'wrote {out}.json and {out}.png')


if __name__ == '__main__':
    main()
