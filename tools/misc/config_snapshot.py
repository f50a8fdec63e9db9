"""A snapshot of every config's built model, to check that a refactor changes nothing.

For each config: the resolved ``model`` config (digest), the parameter count, the state-dict
layout (every key with its shape and dtype, digest), the backbone's static FLOPs at the task's
usual test size from its analytic formulas and, with ``--full``, the whole model's static FLOPs
as ``get_flops.py`` computes them (slow for detectors). Weights are random; nothing is trained.

    python tools/misc/config_snapshot.py configs --out before.json
    ... refactor ...
    python tools/misc/config_snapshot.py configs --out after.json --compare before.json

``--compare`` prints every config whose snapshot differs (field by field) and exits 1 if any do.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_configs(paths) -> list:
    out = []
    for p in paths:
        if osp.isdir(p):
            for root, _, files in os.walk(p):
                out += [osp.join(root, f) for f in files if f.endswith('.py')]
        else:
            out.append(p)
    return sorted(osp.relpath(osp.abspath(p), REPO) for p in out)


def snapshot(path: str, full: bool = False) -> dict:
    import torch

    from mmdyn.analysis.complexity import (backbone_static_flops, build_model_from_cfg,
                                           count_params, default_img_shape, get_backbone,
                                           load_config)
    cfg = load_config(osp.join(REPO, path))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    state = {k: [list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()}
    shape = default_img_shape(cfg, model)
    backbone = get_backbone(model)
    flops, _ = backbone_static_flops(backbone, tuple(shape))
    out = dict(model_cfg=_digest(cfg.model.to_dict()), params=int(count_params(model)),
               state=_digest(state), num_keys=len(state), shape=list(shape),
               backbone=type(backbone).__name__, backbone_flops=flops)
    if full:
        from complexity_cache import measure_static
        out['flops'] = measure_static(osp.join(REPO, path))['flops']
    return out


def compare(now: dict, before: dict) -> list:
    lines = []
    for cfg in sorted(set(now) | set(before)):
        a, b = before.get(cfg), now.get(cfg)
        if a is None or b is None:
            lines.append(f'{cfg}: {"new" if a is None else "gone"}')
            continue
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                lines.append(f'{cfg}: {k} {a.get(k)!r} -> {b.get(k)!r}')
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('paths', nargs='+', help='config files or folders')
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--compare', help='an earlier snapshot: list what differs, exit 1 if any')
    p.add_argument('--full', action='store_true', help='also the whole model\'s static FLOPs')
    args = p.parse_args(argv)
    from complexity_cache import _quiet, speed_up_config_loading
    speed_up_config_loading()
    result = {}
    for i, c in enumerate(find_configs(args.paths)):
        try:
            with _quiet():
                result[c] = snapshot(c, args.full)
        except Exception as e:  # noqa: BLE001 - a config that does not build is recorded
            result[c] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')
        print(f'[{i + 1}] {c}', file=sys.stderr, flush=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as f:
            lines = compare(result, json.load(f))
        print('\n'.join(lines) if lines else 'identical')
        return 1 if lines else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
