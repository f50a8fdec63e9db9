"""Skip statistics of a DiT backbone over a data set (the paper's Fig. 4).

Usage::

    python tools/analysis_tools/dit_skip_stats.py CONFIG [CHECKPOINT] --out DIR \\
        [--split test|val|train] [--max-images N] [--device cpu] [--cfg-options k=v ...]

Runs the backbone in eval mode (deterministic gates, real token skipping) on the images of the
config's ``<split>_dataloader`` (after its pipeline and the model's data preprocessor) and
aggregates, per scale ``i`` and stage ``j``:

* ``skip_ratio``: tokens that took the identity path / tokens of the node, over the images that
  reached the node (what Fig. 4 prints over its lines);
* ``reach_ratio``: images that reached the node at all (the rest skipped it by early stopping);
* ``col_ratio``: images whose column gate took the downsampling path ``P[i][j]``.

Writes ``DIR/dit_skip_stats.json`` and ``DIR/dit_skip_stats.png`` (one line per scale over the
stages, each point labelled with its skip ratio).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import torch

CKPT_EXTS = ('.pth', '.pt', '.ckpt')


def parse_args(argv: Optional[Sequence[str]] = None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='DiT skip ratio per scale and stage (Fig. 4)')
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None)
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--split', default='test', choices=['test', 'val', 'train'])
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    args = p.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.lower().endswith(CKPT_EXTS):
        p.error(f'checkpoint must end with one of {CKPT_EXTS}: {args.checkpoint}')
    if args.max_images is not None and args.max_images < 1:
        p.error('--max-images must be >= 1')
    from mmdyn.utils.cli import check_output_path
    check_output_path('dit_skip_stats.py', '--out', args.out, 'dir')
    return args


def find_dit(model):
    from mmdyn.models.backbones.dit import DiT
    for m in model.modules():
        if isinstance(m, DiT):
            return m
    raise ValueError('the model has no mmdyn.DiT module')


class SkipAccumulator:
    """Sums the per-image decisions of successive DiT forwards."""

    def __init__(self, num_scales: int, num_stages: int):
        self.S, self.M = num_scales, num_stages
        self.kept = torch.zeros(num_scales, num_stages, dtype=torch.float64)
        self.tokens = torch.zeros(num_scales, num_stages, dtype=torch.float64)
        self.reached = torch.zeros(num_scales, num_stages + 1, dtype=torch.float64)
        self.col = torch.zeros(num_scales - 1, num_stages + 1, dtype=torch.float64)
        self.images = 0

    def add(self, dit) -> None:
        reached = dit.last_reached.cpu()
        b = reached.shape[0]
        self.images += b
        self.reached += reached.double().sum(0)
        for i in range(self.S):
            for j in range(self.M):
                m = dit.last_maps[f'row_{i}_{j}'].cpu().flatten(1).double()
                r = reached[:, i, j].double()
                self.kept[i, j] += (m.sum(1) * r).sum()
                self.tokens[i, j] += (r * m.shape[1]).sum()
            if i < self.S - 1:
                for j in range(self.M + 1):
                    self.col[i, j] += dit.last_maps[f'col_{i}_{j}'].cpu().flatten().double().sum()

    def result(self) -> dict:
        skip = torch.where(self.tokens > 0, 1 - self.kept / self.tokens.clamp_min(1),
                           torch.full_like(self.kept, float('nan')))
        n = max(self.images, 1)
        return dict(images=self.images, skip_ratio=skip.tolist(),
                    reach_ratio=(self.reached / n).tolist(), col_ratio=(self.col / n).tolist())


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    skip = res['skip_ratio']
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, row in enumerate(skip):
        xs = [j + 1 for j, v in enumerate(row) if v == v]
        ys = [v for v in row if v == v]
        if not xs:
            continue
        ax.plot(xs, ys, marker='o', label=f'stride {4 * 2 ** i}')
        for x, y in zip(xs, ys):
            ax.annotate(f'{y:.2f}', (x, y), textcoords='offset points', xytext=(0, 5),
                        ha='center', fontsize=8)
    ax.set_xlabel('stage')
    ax.set_ylabel('skipped tokens')
    ax.set_ylim(-0.05, 1.1)
    ax.set_xticks(range(1, len(skip[0]) + 1))
    ax.legend()
    ax.set_title(f'DiT skip ratio ({res["images"]} images)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.registry import MODELS

    from mmdyn.utils.cli import (ToolError, check_checkpoint, check_data_roots, check_device,
                                 friendly_errors, load_checked_weights, load_config)
    with friendly_errors('dit_skip_stats.py'):
        cfg = load_config(args.config, args.cfg_options)
        ckpt = check_checkpoint(args.checkpoint) if args.checkpoint else None
        check_device(args.device)
        if cfg.get('custom_imports'):
            import importlib
            for mod in cfg.custom_imports['imports']:
                importlib.import_module(mod)
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        if args.checkpoint is None and isinstance(cfg.model.get('backbone'), dict):
            # no checkpoint: do not fetch pretrained weights either
            cfg.model.backbone.init_cfg = None
        model = MODELS.build(cfg.model)
        try:
            dit = find_dit(model)
        except ValueError as e:
            raise ToolError(f'{e} (is {args.config} a DiT config?)') from None
        if args.checkpoint:  # another model's weights: one line
            load_checked_weights(model, args.checkpoint, ckpt)
        del ckpt
        check_data_roots(cfg, (args.split, ))
        loader_cfg = cfg[f'{args.split}_dataloader']
        if args.split == 'train':  # random crops of different sizes: one image a batch
            loader_cfg['batch_size'] = 1
        loader = Runner.build_dataloader(loader_cfg)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device).eval()
    acc = SkipAccumulator(4, dit.num_stages)
    with torch.no_grad():
        for batch in loader:
            if args.max_images is not None:  # no more images than asked for
                left = args.max_images - acc.images
                batch = {k: v[:left] if isinstance(v, (list, tuple)) else v
                         for k, v in batch.items()}
            data = model.data_preprocessor(batch, False)
            dit(data['inputs'])
            acc.add(dit)
            if args.max_images is not None and acc.images >= args.max_images:
                break
    res = acc.result()
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'dit_skip_stats.json'), 'w') as f:
        json.dump(res, f, indent=1)
    plot(res, osp.join(args.out, 'dit_skip_stats.png'))
    print(json.dumps(dict(images=res['images'], skip_ratio=res['skip_ratio'])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
