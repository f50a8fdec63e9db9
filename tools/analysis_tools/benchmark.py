#!/usr/bin/env python
"""Inference latency and throughput of the model of one config, or of two side by side.

    python tools/analysis_tools/benchmark.py CONFIG [--compare CONFIG2] [--shape H [W]]
        [--batch B] [--repeats R] [--warmup W] [--backbone-only] [--mode tensor|predict]
        [--device cpu|cuda] [--threads N] [--system-malloc] [--compile [BACKEND]]
        [--checkpoint CKPT] [--json]
        [--cfg-options KEY=VALUE ...] [--config-options ...] [--compare-options ...]
        [--override KEY=VALUE ...]

Put the reference first and the model to judge second (``STATIC --compare DYNAMIC``): the
speed-up printed is the first's median latency over the second's. ``--cfg-options`` apply to
both configs, ``--config-options`` / ``--compare-options`` to one of them. ``--override``
forces the decisions of every dynamic model that takes a decision override (the static
reference is timed as it is) for the timed calls and the FLOPs count, through
:func:`mmdyn.models.utils.override_decisions`: e.g. ``--override fine_ratio=0.5`` (MSViT),
``keep_ratio=0.5 columns=pvt`` (DiT), ``keep_ratios=0.5`` (DoViT), ``fractions=[0.45,0.1,0.45]``
(DGE); the keys are listed in :mod:`mmdyn.models.utils.dynamic`.

Each model is built in eval mode (random weights unless ``--checkpoint``) and fed one batch of
``B`` generated images of ``--shape`` (through its data preprocessor, which is not timed). A
timed call is the backbone (``--backbone-only``), the tensor-mode forward (``--mode tensor``,
default: backbone, neck and heads; RPN proposals for two-stage detectors, no post-processing)
or the whole prediction (``--mode predict``: post-processing and rescaling included), under
``torch.no_grad()``, with ``torch.cuda.synchronize()`` around it on CUDA. ``W`` untimed warm-up
calls of each model come first; with ``--compare`` both models are built first and timed in
alternating rounds (one call of each per round, the order reversed every other round), so that
a slow spell of the machine falls on both alike. Reported: median latency per batch and its spread (inter-quartile range and
standard deviation over the ``R`` timed calls, in ms), mean and min, and the throughput
``B / median`` in images per second.

Next to the times, each row gives the FLOPs of what the timed call computed, per image (1 FLOP =
1 multiply-add; the backbone only with ``--backbone-only``): the static count and, for dynamic
models, the realised count of the timed batch (from the dynamic modules' records of one more,
untimed call). With ``--mode predict`` the count is of the tensor-mode forward of the same batch
(the ``flops_of`` field says so): post-processing (NMS, final RoI and mask heads, rescaling) is
timed but not counted. With ``--compare`` the FLOPs ratio of the second row to the first, the ideal
speed-up it implies (its inverse) and the efficiency ``speedup / ideal`` are printed as well:
an efficiency of 1 means the time fell exactly as the FLOPs did.

``--compile`` times the call under ``torch.compile(dynamic=True)`` (inductor, or the backend
named: ``eager`` / ``aot_eager`` trace without generating code). The first call, which traces and
compiles, comes before the warm-up and is not timed; its wall time is reported as
``compile_s``. In every dynamic model here a token count read on the host breaks the graph:
those parts run eagerly between compiled pieces. What compiles and what it gains on this CPU:
docs/complexity.md, "``torch.compile``".

On the CPU, where glibc's malloc runs with no ``MALLOC_*`` setting and nothing preloaded, the
tool makes it keep every freed buffer for reuse, as the benchmark suite does
(:func:`mmdyn.analysis.benchmarking.pin_glibc_malloc`): otherwise each call page-faults the
buffers of 32 MiB or more in again, which costs the larger model (a host at a large input or
batch) more than its dynamic model. ``--system-malloc`` leaves glibc as it is. The allocator is
named in the output.
"""
import argparse
import json
import os.path as osp
import sys
import time

# shared with benchmark_suite.py (re-exported here)
from mmdyn.analysis.benchmarking import (allocator_note, call_flops,  # noqa: F401
                                         latency_stats, pin_glibc_malloc, time_calls)


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Latency and throughput of one or two configs')
    p.add_argument('config', help='config file')
    p.add_argument('--compare', default=None, help='a second config to time side by side')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input size H [W] (default: the task\'s usual test size)')
    p.add_argument('--batch', type=int, default=1, help='images per call (default 1)')
    p.add_argument('--repeats', type=int, default=20, help='timed calls (default 20)')
    p.add_argument('--warmup', type=int, default=5, help='untimed calls first (default 5)')
    p.add_argument('--backbone-only', action='store_true', help='time the backbone only')
    p.add_argument('--mode', choices=['tensor', 'predict'], default='tensor',
                   help='whole-model call: tensor-mode forward (default) or full prediction')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--system-malloc', action='store_true',
                   help='CPU: leave glibc\'s malloc as it is (default: keep every freed buffer '
                        'for reuse, as the benchmark suite does; see above)')
    p.add_argument('--compile', nargs='?', const='inductor', default=None,
                   choices=['inductor', 'aot_eager', 'eager'], metavar='BACKEND',
                   help='time under torch.compile(dynamic=True) with this backend (default '
                   'inductor); the compiling first call is not timed')
    p.add_argument('--checkpoint', default=None, help='weights for CONFIG')
    p.add_argument('--compare-checkpoint', default=None, help='weights for --compare')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of both configs, key=value')
    p.add_argument('--config-options', nargs='+', action=DictAction,
                   help='override settings of CONFIG only (after --cfg-options)')
    p.add_argument('--compare-options', nargs='+', action=DictAction,
                   help='override settings of the --compare config only (after --cfg-options)')
    p.add_argument('--override', nargs='+', action=DictAction,
                   help='force the decisions of the dynamic model(s), key=value (see above)')
    args = p.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) == 1:
            args.shape = [args.shape[0]] * 2
        if len(args.shape) != 2 or min(args.shape) <= 0:
            p.error('--shape takes H or H W (positive)')
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        p.error('--batch and --repeats must be >= 1, --warmup >= 0')
    return args


class _Prepared:
    """One config ready to time: its model, the timed call and the row's fixed fields."""

    def __init__(self, config, args, checkpoint, options, stack):
        import torch

        from mmdyn.analysis.complexity import (build_model_from_cfg, default_img_shape,
                                               generated_batch, load_config)
        from mmdyn.models.utils.dynamic import decisions_overridden, takes_decision_override
        cfg = load_config(config, dict(args.cfg_options or {}, **(options or {})) or None)
        model = build_model_from_cfg(cfg, device=args.device, checkpoint=checkpoint)
        shape = tuple(args.shape) if args.shape else default_img_shape(cfg, model)
        inputs, samples = generated_batch(model, shape, args.batch)
        backbone = getattr(model, 'backbone', model)
        # a codebase model without a separate backbone (DVT's cascade classifier) is timed whole
        bare = backbone is model and not hasattr(model, 'data_preprocessor')
        if args.backbone_only or bare:
            def call():
                return backbone(inputs)
            what = 'backbone'
        elif args.mode == 'predict':
            def call():
                return model(inputs, samples, mode='predict')
            what = 'predict'
        else:
            def call():
                return model(inputs, samples, mode='tensor')
            what = 'tensor'
        spec = dict(args.override or {})
        forced = bool(spec) and takes_decision_override(model)
        # the override holds from here until every timed call and the FLOPs count are done
        stack.enter_context(decisions_overridden(model, spec))
        stack.enter_context(torch.no_grad())
        self.compile_s = None
        if args.compile:
            call = torch.compile(call, dynamic=True, backend=args.compile)
            _sync(args)
            t0 = time.perf_counter()
            call()  # traces and compiles (not timed)
            _sync(args)
            self.compile_s = time.perf_counter() - t0
        self.model, self.inputs, self.samples, self.call, self.what = (
            model, inputs, samples, call, what)
        self.row = dict(config=config, model=type(model).__name__,
                        backbone=type(backbone).__name__, timed=what, device=args.device,
                        batch=args.batch, shape=list(shape),
                        input_shape=[int(s) for s in inputs.shape[-2:]], repeats=args.repeats,
                        warmup=args.warmup, decision_override=spec if forced else None,
                        compile=args.compile, compile_s=self.compile_s)

    def finish(self, times, args) -> dict:
        row = dict(self.row)
        row.update(latency_stats(times, args.batch))
        row.update(call_flops(self.model, self.inputs, self.samples, self.what == 'backbone'))
        row['flops_of'] = 'backbone' if self.what == 'backbone' else 'tensor'
        return row


def _sync(args):
    if args.device == 'cuda':
        import torch
        torch.cuda.synchronize()


def benchmark_configs(specs, args):
    """Rows of the configs ``specs`` (``(config, checkpoint, options)`` each): every model is
    built first, then timed in alternating rounds (``args.repeats`` rounds of one call each,
    the order reversed every other round, after ``args.warmup`` untimed calls of each), so
    that a slow spell of the machine falls on every model alike."""
    import contextlib

    from mmdyn.analysis.benchmarking import alternating_times
    with contextlib.ExitStack() as stack:
        prepared = [_Prepared(c, args, ckpt, opts, stack) for c, ckpt, opts in specs]
        times = alternating_times([p.call for p in prepared], args.repeats, 1, args.warmup,
                                  sync=lambda: _sync(args))
        return [p.finish(t, args) for p, t in zip(prepared, times)]


def benchmark_config(config, args, checkpoint=None, options=None):
    """The row of one config (:func:`benchmark_configs`)."""
    return benchmark_configs([(config, checkpoint, options)], args)[0]


def run(args) -> dict:
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        from mmdyn.analysis.complexity import ConfigError
        raise ConfigError('--device cuda: CUDA is not available')
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = None
    if args.device == 'cpu':  # the suite's state unless asked (named in the output either way)
        allocator = (None if args.system_malloc else pin_glibc_malloc()) or allocator_note()
    if args.compare_options and not args.compare:
        from mmdyn.analysis.complexity import ConfigError
        raise ConfigError('--compare-options needs --compare')
    specs = [(args.config, args.checkpoint, args.config_options)]
    if args.compare:
        specs.append((args.compare, args.compare_checkpoint, args.compare_options))
    rows = benchmark_configs(specs, args)
    if args.override and not any(r['decision_override'] for r in rows):
        from mmdyn.analysis.complexity import ConfigError
        raise ConfigError('--override: no model here takes a decision override')
    out = dict(unit='ms per batch; throughput in images/s', device=args.device,
               threads=torch.get_num_threads() if args.device == 'cpu' else None,
               allocator=allocator, rows=rows)
    if len(rows) == 2:
        out['speedup'] = rows[0]['latency_ms_median'] / rows[1]['latency_ms_median']
        if rows[0]['gflops_realised'] > 0:
            ratio = rows[1]['gflops_realised'] / rows[0]['gflops_realised']
            out['flops_ratio'] = ratio
            out['ideal_speedup'] = 1 / ratio if ratio > 0 else float('inf')
            out['efficiency'] = out['speedup'] * ratio
    return out


def format_text(out: dict) -> str:
    head = (f'{"config":<48}{"timed":>9}{"batch":>6}{"shape":>11}{"median ms":>11}'
            f'{"IQR ms":>9}{"std ms":>9}{"img/s":>9}{"GFLOPs":>10}')
    lines = [f'device {out["device"]}' + (f', {out["threads"]} threads' if out['threads'] else '')
             + (f', host allocator {out["allocator"]}' if out.get('allocator') else ''),
             head, '-' * len(head)]
    for r in out['rows']:
        name = osp.basename(r['config'])
        name = name if len(name) <= 47 else name[:44] + '...'
        shape = 'x'.join(str(s) for s in r['input_shape'])
        lines.append(f'{name:<48}{r["timed"]:>9}{r["batch"]:>6}{shape:>11}'
                     f'{r["latency_ms_median"]:>11.2f}{r["latency_ms_iqr"]:>9.2f}'
                     f'{r["latency_ms_std"]:>9.2f}{r["throughput_img_s"]:>9.2f}'
                     f'{r["gflops_realised"]:>10.3f}')
    for r in out['rows']:
        if r.get('compile'):
            lines.append(f'{osp.basename(r["config"])}: torch.compile({r["compile"]}, dynamic '
                         f'shapes), first call {r["compile_s"]:.1f} s (traces and compiles; '
                         f'not timed)')
    if 'speedup' in out:
        lines.append(f'speedup of the second over the first (median latency ratio): '
                     f'{out["speedup"]:.3f}x')
    if 'flops_ratio' in out:
        lines.append(f'GFLOPs per image of the second / the first: {out["flops_ratio"]:.3f} '
                     f'(ideal speedup {out["ideal_speedup"]:.3f}x); efficiency speedup / ideal: '
                     f'{out["efficiency"]:.3f}')
    if any(r['timed'] == 'predict' for r in out['rows']):
        lines.append('GFLOPs: per image, of the tensor-mode forward of the timed batch '
                     '(post-processing timed, not counted; realised for dynamic models; '
                     '1 FLOP = 1 multiply-add)')
    else:
        lines.append('GFLOPs: per image, of what the timed call computed (realised for '
                     'dynamic models; 1 FLOP = 1 multiply-add)')
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
                out = run(args)
    except SystemExit as e:
        return e.code
    print(json.dumps(out) if args.json else format_text(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
