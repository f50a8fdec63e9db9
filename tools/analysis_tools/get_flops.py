#!/usr/bin/env python
"""Params and FLOPs of the model of a config (mmseg, mmdet or mmpretrain; mmdyn or not).

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]] [--num-images N]
        [--checkpoint CKPT] [--backbone-only] [--json] [--device cpu|cuda]
        [--cfg-options KEY=VALUE ...]

Unit: 1 FLOP = 1 multiply-add (MACs), printed in GFLOPs. The backbone is counted with its
analytic formulas when it has them (mmdyn backbones), the neck and heads with mmengine's
FlopAnalyzer on the backbone's outputs (see ``mmdyn.analysis.complexity``).

Static figures are for one ``--shape`` image (default: the task's usual test size; mmdet inputs
are padded as the data preprocessor pads them). For dynamic models (any module with
``is_dynamic_module``) the realised FLOPs per image are also given, mean / min / max over
``--num-images`` images of the config's test dataloader when its data root exists, else over as
many generated images of ``--shape`` (said on stderr), together with the mean over those images of
every per-image statistic the dynamic modules record (``last_stats``: kept / fine token ratios,
token counts, exit ratios, ...) and, for a dynamic module with a ``block_table()`` (rows of
per-block kept tokens and FLOPs of its last forward), that table averaged over the images.
Without ``--checkpoint`` the weights, gates included, are random.
"""
import argparse
import json
import math
import os.path as osp
import sys

import torch


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description='Params and FLOPs (1 FLOP = 1 multiply-add) of the model of a config')
    p.add_argument('config', help='config file')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input size H [W] (default: the task\'s usual test size)')
    p.add_argument('--num-images', type=int, default=20,
                   help='images to average realised FLOPs of dynamic models over (default 20)')
    p.add_argument('--checkpoint', default=None, help='weights to load (dynamic gates)')
    p.add_argument('--backbone-only', action='store_true', help='count the backbone only')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    p.add_argument('--device', default='cpu', help='device to run images on (default cpu)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    args = p.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) == 1:
            args.shape = [args.shape[0]] * 2
        if len(args.shape) != 2 or min(args.shape) <= 0:
            p.error('--shape takes H or H W (positive)')
    if args.num_images < 1:
        p.error('--num-images must be at least 1')
    return args


def _g(x):
    return None if x is None else float(x) / 1e9


def _note(msg):
    print(msg, file=sys.stderr, flush=True)


def get_flops(args) -> dict:
    """Everything the CLI prints, as a dict (FLOPs in GFLOPs, params in millions)."""
    from mmdyn.analysis.complexity import (UNIT, build_model_from_cfg, dataset_batches,
                                           dataset_root, default_img_shape, generated_batch,
                                           generated_images, load_config, model_complexity,
                                           preprocess, default_data_samples)
    from mmdyn.models.utils.dynamic import collect_dynamic_records, find_dynamic_modules

    from mmdyn.utils.cli import check_device
    check_device(args.device)
    cfg = load_config(args.config, args.cfg_options)
    model = build_model_from_cfg(cfg, device=args.device, checkpoint=args.checkpoint)
    shape = tuple(args.shape) if args.shape else default_img_shape(cfg, model)

    # static figures: one generated image of `shape`, through the data preprocessor (padding)
    inputs, samples = generated_batch(model, shape, 1)
    input_shape = tuple(int(s) for s in inputs.shape[-2:])
    res = model_complexity(model, img_shape=input_shape, data_samples=samples,
                           backbone_only=args.backbone_only)
    backbone = getattr(model, 'backbone', model)
    out = dict(
        config=args.config,
        model=type(model).__name__,
        backbone=type(backbone).__name__,
        unit=UNIT,
        params=res['params'] / 1e6,
        params_unit='M',
        params_breakdown={k: v / 1e6 for k, v in res['params_breakdown'].items()},
        shape=list(shape),
        input_shape=list(input_shape),
        backbone_only=bool(args.backbone_only),
        flops=_g(res['flops']),
        backbone_flops=_g(res['backbone_flops']),
        rest_flops=_g(res['rest_flops']),
        backbone_method=res['backbone_method'],
        breakdown={k: _g(v) for k, v in res['breakdown'].items()},
        unsupported_ops=res['unsupported_ops'],
        is_dynamic=bool(find_dynamic_modules(model)),
        flops_dynamic_mean=None,
        flops_dynamic_min=None,
        flops_dynamic_max=None,
        flops_dynamic_ratio=None,
        images=None,
        num_images=0,
        stats_mean={},
        block_tables={},
    )
    if not out['is_dynamic']:
        return out

    # realised figures over images
    batches = None
    root = dataset_root(cfg)
    if root is not None and osp.isdir(root):
        try:
            batches = list(dataset_batches(cfg, model, args.num_images))
            out['images'] = 'dataset'
        except Exception as e:  # noqa: BLE001
            _note(f'[get_flops] cannot read the test dataset under {root} '
                  f'({type(e).__name__}: {e}); using {args.num_images} generated images of '
                  f'{shape[0]}x{shape[1]} instead')
    else:
        where = f'data root {root!r} does not exist' if root else 'the config names no data root'
        _note(f'[get_flops] {where}; using {args.num_images} generated images of '
              f'{shape[0]}x{shape[1]} instead')
    if batches is None:
        imgs = generated_images(args.num_images, shape, seed=1)
        batches = [preprocess(model, [im], default_data_samples(model, 1, shape))
                   for im in imgs]
        out['images'] = 'generated'
    realised, static = [], []
    stats = {}  # key -> list of Tensor[B]
    tables = {}  # module name -> list of (batch size, rows)
    dyn_ids = {id(m) for m in find_dynamic_modules(model)}
    dyn_named = [(n, m) for n, m in model.named_modules() if id(m) in dyn_ids]
    for x, s in batches:
        r = model_complexity(model, inputs=x, data_samples=s, backbone_only=args.backbone_only)
        realised.append(r['flops_dynamic'])
        static.append(torch.full_like(r['flops_dynamic'], r['flops']))
        rec = collect_dynamic_records(model) or {}
        for k, v in rec.items():
            if k != 'flops':
                stats.setdefault(k, []).append(v.detach().double().cpu().reshape(-1))
        for name, m in dyn_named:
            if callable(getattr(m, 'block_table', None)):
                tables.setdefault(name or type(m).__name__, []).append(
                    (int(x.shape[0]), m.block_table()))
    realised = torch.cat(realised)
    static = torch.cat(static)
    out.update(
        stats_mean={k: float(torch.cat(v).mean()) for k, v in sorted(stats.items())},
        block_tables={k: average_tables(v) for k, v in tables.items()},
        num_images=int(realised.numel()),
        flops_dynamic_mean=_g(realised.mean()),
        flops_dynamic_min=_g(realised.min()),
        flops_dynamic_max=_g(realised.max()),
        flops_static_on_images_mean=_g(static.mean()),
        flops_dynamic_ratio=float((realised / static).mean()),
    )
    if args.checkpoint is None:
        _note('[get_flops] no --checkpoint: realised FLOPs are those of random (untrained) gates')
    return out


def average_tables(tables):
    """Average per-block tables over forwards, weighting each by its number of images.

    ``tables``: list of ``(num_images, rows)``, ``rows`` a list of dicts of numbers (one dict per
    block, the same keys and length in every forward). Returns the averaged rows; integer-valued
    identity columns (``block``) stay as they are. A column averaged over the images that
    reached the block (``*_reached`` next to ``reached``, e.g. DiT's ``skip_reached``) is
    weighted by the images that reached it; a NaN (no image of that forward did) weighs
    nothing, and the average is NaN only when no forward has a value.
    """
    first = tables[0][1]
    out = []
    for i, row in enumerate(first):
        avg = {}
        for k, v in row.items():
            if k == 'block' or not isinstance(v, (int, float)):
                avg[k] = v
                continue
            num = den = 0.
            for n, rows in tables:
                value = float(rows[i][k])
                weight = n * float(rows[i]['reached']) if (
                    k.endswith('_reached') and 'reached' in rows[i]) else n
                if weight and not math.isnan(value):
                    num, den = num + weight * value, den + weight
            avg[k] = num / den if den else float('nan')
        out.append(avg)
    return out


def format_table(rows) -> list:
    keys = list(rows[0])
    lines = ['  ' + ''.join(f'{k:>14}' for k in keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r[k]
            if k == 'flops':
                cells.append(f'{v / 1e9:>14.4f}')
            elif isinstance(v, float) and not v.is_integer():
                cells.append(f'{v:>14.3f}')
            else:
                cells.append(f'{v:>14}')
        lines.append('  ' + ''.join(cells))
    return lines


def format_text(out: dict) -> str:
    from mmdyn.analysis.complexity import group_breakdown
    lines = []
    w = 16
    lines.append(f'{"config":<{w}}{out["config"]}')
    lines.append(f'{"model":<{w}}{out["model"]} (backbone {out["backbone"]}, counted '
                 f'{out["backbone_method"]})')
    shape = 'x'.join(str(s) for s in out['shape'])
    ishape = 'x'.join(str(s) for s in out['input_shape'])
    lines.append(f'{"input":<{w}}{shape}' + (f' (padded to {ishape})' if ishape != shape else ''))
    pb = ', '.join(f'{k} {v:.2f}' for k, v in out['params_breakdown'].items())
    part = ' (backbone only)' if out['backbone_only'] else ''
    lines.append(f'{"params":<{w}}{out["params"]:.2f} M{part}   [{pb}]')
    lines.append(f'{"FLOPs (static)":<{w}}{out["flops"]:.2f} {out["unit"]}{part}')
    lines.append('breakdown (GFLOPs per image):')
    bd = out['breakdown']
    bb = {k: v for k, v in bd.items() if k.startswith('backbone.')}
    stages = group_breakdown(bb, depth=1)
    lines.append(f'  {"backbone":<40}{bd["backbone"]:10.3f}')
    for st, v in stages.items():
        lines.append(f'    {st[len("backbone."):]:<38}{v:10.3f}')
        inner = [(k, x) for k, x in bb.items() if k != st and k.startswith(st + '.')]
        for k, x in inner:
            lines.append(f'      {k[len(st) + 1:]:<36}{x:10.3f}')
    for k, v in bd.items():
        if k == 'backbone' or k.startswith('backbone.'):
            continue
        ind = '    ' if '.' in k else '  '
        lines.append(f'{ind}{k:<{42 - len(ind)}}{v:10.3f}')
    if out['unsupported_ops']:
        ops = ', '.join(f'{k} x{v}' for k, v in sorted(out['unsupported_ops'].items()))
        lines.append(f'{"not counted":<{w}}{ops}')
    if out['is_dynamic']:
        lines.append(
            f'{"FLOPs (dynamic)":<{w}}mean {out["flops_dynamic_mean"]:.2f}, '
            f'min {out["flops_dynamic_min"]:.2f}, max {out["flops_dynamic_max"]:.2f} GFLOPs '
            f'over {out["num_images"]} {out["images"]} images '
            f'({100 * out["flops_dynamic_ratio"]:.1f}% of static'
            + ('' if out.get('flops_static_on_images_mean') is None or abs(
                out['flops_static_on_images_mean'] - out['flops']) <= 1e-6 * max(
                out['flops'], 1e-12) else
               f' on those images: {out["flops_static_on_images_mean"]:.2f} GFLOPs, '
               f'at their own sizes') + ')')
        if out.get('stats_mean'):
            st = ', '.join(f'{k} {v:.4g}' for k, v in out['stats_mean'].items())
            lines.append(f'{"per image":<{w}}{st} (means over the images)')
        for name, rows in (out.get('block_tables') or {}).items():
            lines.append(f'per block of {name} (means over the images; flops in GFLOPs):')
            lines.extend(format_table(rows))
    else:
        lines.append(f'{"FLOPs (dynamic)":<{w}}- (static model)')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    import contextlib

    from mmdyn.analysis.complexity import stdout_to_stderr
    from mmdyn.utils.cli import friendly_errors
    try:
        # one line `error: ...` and exit status 1 for bad input (MMDYN_DEBUG=1: traceback)
        with friendly_errors(None, code=1):
            # with --json, stdout carries the JSON object only (logs go to stderr)
            with stdout_to_stderr() if args.json else contextlib.nullcontext():
                out = get_flops(args)
    except SystemExit as e:
        return e.code
    if args.json:
        print(json.dumps(out))
    else:
        print(format_text(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
