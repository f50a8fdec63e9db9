#!/usr/bin/env python
"""Every dynamic method against its static host, in one process: latency, throughput, FLOPs ratio
and efficiency at forced budgets, next to the attainable efficiency of a dense model of the same
FLOPs, written as a Markdown table, a JSON file and a plot.

    python tools/analysis_tools/benchmark_suite.py [--device cpu|cuda] [--amp fp16|bf16]
        [--quick] [--tiny] [--out-dir DIR] [--methods dge dit dovit msvit dvt]
        [--batches B ...] [--levels L ...] [--rounds R] [--per-round N] [--warmup W]
        [--min-seconds S] [--threads N] [--train] [--no-ref] [--dvt-seq N] [--profile]

Pairs (static host first, the dynamic model second; the speed-up is host median / dynamic
median):

* DGE: PVT-S vs DGE-PVT-S (FPN segmentors, backbone timed, 512x512); level ``l``: the gates
  forced to ``fractions=[l, 0, 1-l]`` (a share ``l`` of the regions at the finest
  granularity, the rest at the coarsest);
* DiT: PVTv2-B2 vs DiT-B2 (classifiers, backbone, 224); ``keep_ratio=l`` on the PVTv2 path
  (``columns='pvt'``);
* DoViT: ViT-S vs DoViT-S (Segmenter encoders, 512x512); ``keep_ratios=l`` (every decision);
* MSViT: ViT-S vs MSViT-S (classifiers, backbone, 224); ``fine_ratio=l``;
* DVT: T2T-ViT-12 vs the 2-exit DVT-T2T-ViT-12 (whole cascade with real early exit, 224);
  level ``l``: a share ``l`` of the timed batch stops at the first exit (thresholds solved on
  that batch as ``dvt_thresholds.py --exit-shares`` does, the realised share recorded). At
  batch 1 one image cannot stand for a share: a timed unit is ``--dvt-seq N`` (default 8)
  single-image calls on ``N`` different generated images, the thresholds solved on those ``N``
  so that ``round(l N)`` of them stop at exit 1; the host makes the same ``N`` calls; latency
  per image (unit / ``N``), GFLOPs the mean of the ``N`` single-image records.

``--tiny`` runs the same pairs on the CPU smoke configs of ``configs/_tiny_`` at 64x64 (tiny
widths; to test the suite's logic, not for results); there the host is the dynamic model itself
at full budget (level 1: everything fine / kept; DVT: thresholds 1.0, no early exit).

The levels of DGE, DiT, DoViT and MSViT are decision overrides
(:func:`mmdyn.models.utils.override_decisions`) of one built dynamic model, applied for the
timed calls and the FLOPs count of that level and lifted after.

For every pair, level and batch, the models are timed in alternating rounds
(:func:`mmdyn.analysis.benchmarking.alternating_times`: ``W`` untimed warm-up calls of each,
then ``R`` rounds of ``N`` timed calls of each, the order reversed every other round, and more
rounds, up to ``10 R``, until the row's timed calls have taken ``--min-seconds``) under
``torch.no_grad()`` (and ``torch.autocast`` with ``--amp``), with ``torch.cuda.synchronize()``
before and after each timed call on CUDA. Reported: median and IQR (ms per batch),
throughput (images/s), the realised GFLOPs per image of both from the models' own records
(one untimed call each before the warm-up, ``model_complexity``: ``static_flops`` /
``last_flops``), the FLOPs ratio dynamic / host, and ``efficiency = speed-up x FLOPs ratio``
(1 = time falls as the FLOPs do).

The attainable-efficiency reference (on unless ``--no-ref``): the static host on a smaller
input, the size (sides multiples of the host's stride, :data:`REF`: 32 for the PVT hosts, the
patch size 16 for ViT / T2T-ViT; each side at most the original's, aspect within 2:1 of it)
whose realised GFLOPs per image are closest to the dynamic model's, timed as a third model in
the same rounds (the host's batch resized). T2T-ViT takes one square size, so DVT's reference
is the T2T-ViT-12 classifier rebuilt for it with the host's weights; the tiny DVT host (the
cascade) has none. Recorded: ``ref`` (input shape, latency, GFLOPs), ``ref_flops_ratio`` (ref /
host), ``ref_efficiency = host ms / ref ms x ref_flops_ratio`` (what a dense model of those
FLOPs attains on this device: a target above it is out of reach for any model of those FLOPs)
and ``dyn_vs_ref = ref ms / dynamic ms x dynamic GFLOPs / ref GFLOPs`` (>= 1: the dynamic
model turns its FLOP saving into time as well as the dense model does).

DVT's exits as static models (DVT rows, unless ``--no-ref``): the dense reference matches
DVT's mean FLOPs, but DVT must run its first exit, a transformer of few tokens, on every image.
Two more models in the same rounds: the *static cascade* (the exits back to back on the images
the dynamic model sent to each, with the reuse state, no confidences or thresholds; its FLOPs
are the dynamic model's) and *exit 1* alone on every image, as it runs in the cascade (handing
its attention logits on where the next exit reuses them). Recorded per row as ``dvt_exits``:
both latencies and GFLOPs, ``cascade_efficiency`` and ``exit1_efficiency`` (host ms / ms x
GFLOPs / host GFLOPs) and ``dyn_vs_cascade`` (static cascade ms / dynamic ms: near 1, the
early-exit decisions and their records cost nothing); a second table in ``suite.md``.

``--train`` (off with ``--quick``) adds one row per pair: the median time of a training step
(forward with the loss, backward, SGD step; the models in alternating rounds) at the largest
batch, without forcing, and the peak memory on CUDA (one more untimed step). For MSViT also two
rows of the dynamic model with its gate at P(fine) 0.5 (the gate's last layer weight 0, bias 0:
each region fine with probability 0.5 under the training Gumbel noise), adaptive trimming on and
off.

``--profile``: for each method at level 0.5 and batch 1 (or the first of ``--batches``),
torch.profiler (CPU activities) over 3 calls of host, dynamic and reference; ``profile.md``
lists per model the top 15 ops by self CPU time (calls, self ms, share of the model's total)
and the operator dispatches of one call (a DVT sequence: per single-image call; device
independent: on a GPU at small batch each costs host time and a kernel launch, so latency
follows this count).

Host memory (CPU, full-size rows): where glibc's malloc runs with no ``MALLOC_*`` setting and
no preloaded allocator, the suite makes it keep every freed buffer for reuse (no mmapped
buffers, no trimming: :func:`pin_glibc_malloc`), as a caching allocator does, so that a model
with large buffers does not page-fault them in on every call while its dynamic model's smaller
ones are reused, and a row does not run faster or slower for what ran before it in the process.
The allocator is named in the table's first line and in ``suite.json``.

Batches: 1 and 8 (CUDA: also 32 and 64). ``--quick``: levels 0.25 / 0.5 / 0.75, fewer rounds,
no minimum seconds; budgeted to finish in a few minutes on one GPU. Outputs in ``--out-dir``
(default ``work_dirs/benchmark_suite``): ``suite.md``, ``suite.json``, ``suite.png`` (reference
points open), ``profile.md`` with ``--profile``; the table is printed too.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Optional

# the host allocator state of CPU rows (shared with benchmark.py, re-exported here)
from mmdyn.analysis.benchmarking import (KEEP_TRIM, M_MMAP_MAX,  # noqa: F401
                                         M_TRIM_THRESHOLD, MALLOC_VARS,
                                         allocator_note, pin_glibc_malloc)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = ('dge', 'dit', 'dovit', 'msvit', 'dvt')


def _cfg(*parts):
    return osp.join(REPO, 'configs', *parts)


#: the decision override of each method at a level in (0, 1] (DVT: thresholds per batch)
KNOBS = {
    'dge': ('fractions [l, 0, 1-l] (finest share)',
            lambda l: dict(fractions=[float(l), 0., 1. - float(l)])),
    'dit': ('keep_ratio (columns pvt)', lambda l: dict(keep_ratio=float(l), columns='pvt')),
    'dovit': ('keep_ratios (every decision)', lambda l: dict(keep_ratios=float(l))),
    'msvit': ('fine_ratio', lambda l: dict(fine_ratio=float(l))),
    'dvt': ('exit share at exit 1', None),  # thresholds solved on the timed batch
}

#: full-size pairs: (host config, host options, dynamic config, dynamic options, shape, timed)
FULL = {
    'dge': (_cfg('dge', 'fpn_pvt-s_4xb8-80k_ade20k-512x512.py'), {},
            _cfg('dge', 'fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py'), {}, (512, 512), 'backbone'),
    'dit': (_cfg('dit', 'pvtv2-b2_8xb128_in1k.py'), {},
            _cfg('dit', 'dit-b2_8xb128_in1k.py'), {}, (224, 224), 'backbone'),
    'dovit': (_cfg('dovit', 'segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'), {},
              _cfg('dovit', 'segmenter_dovit-s_mask_8xb1-160k_ade20k-512x512.py'), {},
              (512, 512), 'backbone'),
    'msvit': (_cfg('msvit', 'vit-s-p16_1xb512-20e_in1k-224px.py'), {},
              _cfg('msvit', 'msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'), {},
              (224, 224), 'backbone'),
    'dvt': (_cfg('dvt', 't2t-vit-12_8xb128_in1k.py'), {},
            _cfg('dvt', 'dvt-2exit_t2t-vit-12_8xb128_in1k.py'), {'model.thresholds_file': None},
            (224, 224), 'model'),
}

#: tiny pairs (CPU logic checks): the host is the dynamic config at full budget
TINY = {
    'dge': (_cfg('_tiny_', 'fpn_dge-pvt-tiny_toy-ade20k.py'),
            {'model.backbone.decision_override': dict(fractions=[1., 0., 0.])},
            _cfg('_tiny_', 'fpn_dge-pvt-tiny_toy-ade20k.py'), {}, (64, 64), 'backbone'),
    'dit': (_cfg('_tiny_', 'fpn_dit-tiny_toy-ade20k.py'),
            {'model.backbone.decision_override': dict(keep_ratio=1.0, columns='pvt')},
            _cfg('_tiny_', 'fpn_dit-tiny_toy-ade20k.py'), {}, (64, 64), 'backbone'),
    'dovit': (_cfg('_tiny_', 'setr_dovit-tiny_toy-ade20k.py'),
              {'model.backbone.decision_override': dict(keep_ratios=1.0)},
              _cfg('_tiny_', 'setr_dovit-tiny_toy-ade20k.py'), {}, (64, 64), 'backbone'),
    'msvit': (_cfg('_tiny_', 'msvit-tiny_toy-imagenet.py'),
              {'model.backbone.decision_override': dict(fine_ratio=1.0)},
              _cfg('_tiny_', 'msvit-tiny_toy-imagenet.py'), {}, (64, 64), 'backbone'),
    'dvt': (_cfg('_tiny_', 'dvt-tiny_toy-imagenet.py'), {'model.thresholds': [1.0, 1.0]},
            _cfg('_tiny_', 'dvt-tiny_toy-imagenet.py'), {}, (64, 64), 'model'),
}


#: the attainable-efficiency reference of each method (the static host timed at a smaller
#: input): ``stride``, what the candidate sides are multiples of (the host's total stride or
#: patch size); ``rebuild``, a config key set to the side when the host takes one input size
#: only (T2T-ViT: the host is rebuilt for each square size, the host's weights loaded)
REF = {
    'dge': dict(stride=32),
    'dit': dict(stride=32),
    'dovit': dict(stride=16),
    'msvit': dict(stride=16),
    'dvt': dict(stride=16, rebuild='model.backbone.img_size'),
}
#: tiny hosts: the tiny MSViT pads to its coarse scale; the tiny DVT host is the cascade itself
#: (no early exit), which resizes every input to its exits' grids
TINY_REF = dict(
    REF, msvit=dict(stride=32),
    dvt='the tiny host (the cascade without early exit) resizes every input to its exits\' '
        'grids: its FLOPs do not depend on the input size')


def _fraction(s):
    v = float(s)
    if not 0. < v <= 1.:
        raise argparse.ArgumentTypeError(f'a level is a fraction in (0, 1], got {s}')
    return v


def _positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {s}')
    return v


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise :class:`mmdyn.utils.cli.ToolError` (one line through
    ``friendly_errors`` in :func:`main`) instead of printing the usage."""

    def error(self, message):
        from mmdyn.utils.cli import ToolError
        raise ToolError(' '.join(str(message).split()))


def parse_args(argv=None):
    p = _Parser(description='Every dynamic method against its static host')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--amp', choices=['fp16', 'bf16'], default=None,
                   help='time under torch.autocast with this dtype (default fp32)')
    p.add_argument('--quick', action='store_true',
                   help='fewer rounds, no training rows (a few minutes on one GPU)')
    p.add_argument('--tiny', action='store_true',
                   help='tiny-width CPU smoke configs at 64x64 (tests the logic, not results)')
    p.add_argument('--out-dir', default=osp.join('work_dirs', 'benchmark_suite'))
    p.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    p.add_argument('--batches', nargs='+', type=_positive, default=None,
                   help='batch sizes (default 1 8; CUDA: 1 8 32 64)')
    p.add_argument('--levels', nargs='+', type=_fraction, default=None,
                   help='forced budgets as fractions (default 0.25 0.5 0.75)')
    p.add_argument('--rounds', type=_positive, default=None,
                   help='alternating rounds (default 5; --quick 3)')
    p.add_argument('--per-round', type=_positive, default=None,
                   help='timed calls of each model per round (default 4 on CUDA, 1 on CPU; '
                        '--quick CUDA 3)')
    p.add_argument('--warmup', type=int, default=None, help='untimed calls of each (default 2)')
    p.add_argument('--min-seconds', type=float, default=None,
                   help='more rounds (up to 10x --rounds) until a row\'s timed calls have taken '
                        'this long (default 8 on CPU, 2 on CUDA; --quick or --tiny 0)')
    p.add_argument('--threads', type=_positive, default=None, help='torch CPU threads')
    p.add_argument('--train', action='store_true',
                   help='also training step time and peak memory (ignored with --quick)')
    p.add_argument('--dvt-seq', type=_positive, default=8,
                   help='DVT at batch 1: a timed unit is this many single-image calls on as '
                        'many images, round(level x N) of them stopping at exit 1 (default 8)')
    p.add_argument('--profile', action='store_true',
                   help='also profile.md: torch.profiler (CPU activities) of host, dynamic and '
                        'ref at level 0.5, batch 1 (or the first of --batches): the top ops by '
                        'self CPU time')
    p.add_argument('--no-ref', dest='ref', action='store_false',
                   help='no attainable-efficiency reference (the static host at a smaller '
                        'input of about the dynamic model\'s FLOPs)')
    args = p.parse_args(argv)
    if args.warmup is not None and args.warmup < 0:
        p.error('--warmup must be >= 0')
    if args.min_seconds is not None and not args.min_seconds >= 0:
        p.error('--min-seconds must be >= 0')
    if args.amp == 'fp16' and args.device == 'cpu':
        p.error('--amp fp16 needs --device cuda (use --amp bf16 on the CPU)')
    cuda = args.device == 'cuda'
    args.profile_batch = args.batches[0] if args.batches else 1
    args.batches = args.batches or ([1, 8, 32, 64] if cuda else [1, 8])
    args.levels = args.levels or [0.25, 0.5, 0.75]
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.per_round = args.per_round or ((3 if args.quick else 4) if cuda else 1)
    args.warmup = 2 if args.warmup is None else args.warmup
    if args.min_seconds is None:
        args.min_seconds = 0. if args.quick or args.tiny else (2. if cuda else 8.)
    return args


# ------------------------------------------------------------------------------ models
def _build(config, options, device):
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    cfg = load_config(config, options or None)
    torch.manual_seed(0)
    return cfg, build_model_from_cfg(cfg, device=device)


def _call(model, timed, inputs, samples):
    backbone = getattr(model, 'backbone', model)
    if timed == 'backbone' or (backbone is model and not hasattr(model, 'data_preprocessor')):
        return (lambda: backbone(inputs)), True
    return (lambda: model(inputs, samples, mode='tensor')), backbone is model


def _dvt_set_share(model, inputs, share, single=False):
    """Thresholds that make ``share`` of ``inputs`` (rounded to whole images) stop at the first
    exit (2-exit cascades; a deeper cascade runs the rest to the last exit; a sequence: the share
    of the batch stopping at each exit but the last). Returns the
    realised share (of the batch run at once, or, ``single``, of one call per image) and each
    image's exit index."""
    import numpy as np
    import torch

    from mmdyn.models.utils.dynamic import full_compute
    here = osp.dirname(osp.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from dvt_thresholds import thresholds_for_shares
    with torch.no_grad(), full_compute(model):
        _, _, all_logits = model.early_exit(inputs)
    conf = np.stack([a.float().softmax(-1).max(-1).values.cpu().numpy() for a in all_logits])
    shares = list(share) if isinstance(share, (list, tuple)) else \
        [share] + [0.] * (conf.shape[0] - 2)
    model.set_thresholds(thresholds_for_shares(conf, shares))
    with torch.no_grad():
        if single:
            exit_idx = torch.cat([model.early_exit(inputs[i:i + 1])[1]
                                  for i in range(len(inputs))])
        else:
            _, exit_idx, _ = model.early_exit(inputs)
    return int((exit_idx == 0).sum()) / len(exit_idx), exit_idx.tolist()


def _autocast(args):
    import contextlib

    import torch
    if args.amp is None:
        return contextlib.nullcontext()
    dtype = torch.float16 if args.amp == 'fp16' else torch.bfloat16
    return torch.autocast(args.device, dtype=dtype)


def _trace_safe(args):
    """Inside :func:`_autocast`: no cast-weight cache, so that the FLOP counter's
    ``torch.jit.trace`` does not meet cached casts of weights that require grad (CUDA raised
    'Cannot insert a Tensor that requires grad as a constant' for DVT under bf16)."""
    import contextlib

    import torch
    if args.amp is None:
        return contextlib.nullcontext()
    dtype = torch.float16 if args.amp == 'fp16' else torch.bfloat16
    return torch.autocast(args.device, dtype=dtype, cache_enabled=False)


def ref_candidates(shape, stride, square=False):
    """Input sizes ``(h, w)`` for the reference: both sides multiples of ``stride`` and at most
    the original's, the aspect ratio within 2:1 of the original's (``square``: ``h == w``);
    the original size is always one."""
    H, W = int(shape[0]), int(shape[1])
    out = []
    for h in range(stride, H + 1, stride):
        for w in range(stride, W + 1, stride):
            if square and h != w:
                continue
            if 0.5 <= (h / w) / (H / W) <= 2.:
                out.append((h, w))
    if (H, W) not in out:
        out.append((H, W))
    return out


def _resized(inputs, size):
    import torch.nn.functional as F
    if tuple(inputs.shape[-2:]) == tuple(size):
        return inputs
    return F.interpolate(inputs, size=tuple(size), mode='bilinear', align_corners=False)


class _RefHost:
    """The static host at smaller inputs, the attainable-efficiency reference of one method: its
    candidate sizes (:func:`ref_candidates`), their realised GFLOPs per image (cached), the
    size closest in FLOPs to a target and the model to time at a size.

    The GFLOPs of a candidate are the host's own record at that size: the static count (no call)
    for a static host, a call on the timed batch resized for a dynamic one (the tiny hosts: the
    dynamic model at full budget)."""

    def __init__(self, args, host, timed, shape, stride, rebuild=None, config=None,
                 options=None):
        self.args, self.host, self.timed, self.shape = args, host, timed, tuple(shape)
        self.rebuild, self.config, self.options = rebuild, config, options or {}
        self.candidates = ref_candidates(shape, stride, square=rebuild is not None)
        self._models = {self.shape: host}
        self._gflops = {}

    def model(self, size):
        size = tuple(size)
        if self.rebuild is None:
            return self.host
        if size not in self._models:
            _, m = _build(self.config, {**self.options, self.rebuild: size[0]}, self.args.device)
            m.load_state_dict(self.host.state_dict())
            m.eval()
            self._models[size] = m
        return self._models[size]

    def _bare(self, model):
        return _call(model, self.timed, None, None)[1]

    def gflops(self, size, inputs, dynamic_host):
        from mmdyn.analysis.benchmarking import call_flops
        from mmdyn.analysis.complexity import default_data_samples, model_complexity
        size = tuple(size)
        key = (size, len(inputs)) if dynamic_host else size
        if key not in self._gflops:
            model = self.model(size)
            if dynamic_host:
                x = _resized(inputs, size)
                g = call_flops(model, x, default_data_samples(model, len(x), size),
                               self._bare(model))['gflops_realised']
            else:
                g = float(model_complexity(model, img_shape=size,
                                           backbone_only=self._bare(model))['flops']) / 1e9
            if self.rebuild is not None and size != self.shape:
                del self._models[size]  # rebuilt again if chosen
            self._gflops[key] = g
        return self._gflops[key]

    def choose(self, target, inputs, dynamic_host):
        """The candidate whose GFLOPs per image are closest to ``target`` (ties: the aspect
        closest to the original's, then the larger)."""
        import math
        H, W = self.shape
        return min(self.candidates, key=lambda c: (
            abs(self.gflops(c, inputs, dynamic_host) - target),
            abs(math.log((c[0] / c[1]) / (H / W))), -c[0] * c[1]))


def _unit(model, timed, inputs, samples, seq=False):
    """``(fn, flops)`` of one timed call of ``model``: ``fn`` runs it on the batch ``inputs``
    or, with ``seq``, once per image (single-image calls one after another); ``flops()`` its
    realised GFLOPs per image from the model's records (:func:`call_flops`; with ``seq`` the
    mean of the single-image records, which are listed too)."""
    import statistics

    from mmdyn.analysis.benchmarking import call_flops
    if not seq:
        fn, bare = _call(model, timed, inputs, samples)
        return fn, lambda: call_flops(model, inputs, samples, bare)
    parts = [(inputs[i:i + 1], None if samples is None else samples[i:i + 1])
             for i in range(len(inputs))]
    calls = [_call(model, timed, x, s)[0] for x, s in parts]
    bare = _call(model, timed, None, None)[1]

    def fn():
        for c in calls:
            c()

    def flops():
        recs = [call_flops(model, x, s, bare) for x, s in parts]
        return dict(gflops_static=statistics.fmean(r['gflops_static'] for r in recs),
                    gflops_realised=statistics.fmean(r['gflops_realised'] for r in recs),
                    is_dynamic=recs[0]['is_dynamic'],
                    gflops_per_image=[r['gflops_realised'] for r in recs])
    return fn, flops


def _dvt_exit_units(dyn, inputs, exit_idx, seq=False):
    """Two timed units that run DVT's exits as static models, no decisions: ``cascade``, the
    exits back to back on the images the dynamic model sent to each (exit ``k`` on the images
    whose exit index is at least ``k``, with the previous exit's state; the same operators as
    the early-exit forward less the confidences and thresholds), and ``exit1``, the first exit
    alone on every image (as in the cascade: with relationship reuse it hands its attention
    logits on, so it computes its attention explicitly). Returns ``[(name, fn, gflops per
    image)]`` (``seq``: one call per image, as the dynamic model's unit)."""
    import statistics

    import torch
    exits = list(dyn.exits)
    gf = [float(e.flops()) / 1e9 for e in exits]

    def cascade_call(x, idx):
        # the images (rows of x) that run each exit, as indexes of the previous exit's images
        plan, prev = [], torch.arange(len(idx))
        for k in range(len(exits)):
            rows = torch.tensor([i for i in range(len(idx)) if idx[i] >= k], dtype=torch.long)
            if not len(rows):
                break
            keep = torch.searchsorted(prev, rows).to(x.device)
            plan.append((rows.to(x.device), None if k == 0 else keep))
            prev = rows

        def fn():
            state = None
            for e, (rows, keep) in zip(exits, plan):
                if keep is not None:
                    state = {n: t.index_select(0, keep) for n, t in state.items()}
                _, state = e(x.index_select(0, rows), state)
        return fn

    def exit1_call(x):
        return lambda: exits[0](x, None)

    if seq:
        cascades = [cascade_call(inputs[i:i + 1], exit_idx[i:i + 1]) for i in range(len(inputs))]
        firsts = [exit1_call(inputs[i:i + 1]) for i in range(len(inputs))]

        def cascade():
            for c in cascades:
                c()

        def exit1():
            for c in firsts:
                c()
    else:
        cascade, exit1 = cascade_call(inputs, exit_idx), exit1_call(inputs)
    per_image = [sum(gf[:int(k) + 1]) for k in exit_idx]
    return [('cascade', cascade, statistics.fmean(per_image)), ('exit1', exit1, gf[0])]


def _setup_row(args, host, dyn, timed, shape, batch, level=None, method=None, ref=None):
    """The generated inputs, callables and FLOPs of one row (see :func:`_time_pair`):
    ``(row, fns, flops, seq, names)``, ``flops`` the records of host, dynamic (and reference,
    DVT's static exits), ``seq`` the number of single-image calls a timed unit makes (0: one
    batch call), ``names`` the units' names (``host``, ``dynamic``, ``ref``, ``cascade``,
    ``exit1``)."""
    from mmdyn.analysis.complexity import default_data_samples, generated_batch

    # DVT at batch 1: a sequence of single-image calls on different images
    seq = args.dvt_seq if method == 'dvt' and batch == 1 and level is not None else 0
    n = seq or batch
    inputs, samples = generated_batch(host, shape, n)
    d_inputs, d_samples = generated_batch(dyn, shape, n)
    row = dict(batch=batch, shape=list(shape), level=level)
    if seq:
        row['dvt_seq'] = seq
    exit_idx = None
    if method == 'dvt' and level is not None:
        row['exit_share_realised'], exit_idx = _dvt_set_share(dyn, d_inputs, level,
                                                              single=bool(seq))
        row['dvt_thresholds'] = list(dyn.thresholds)
    units = [_unit(host, timed, inputs, samples, seq), _unit(dyn, timed, d_inputs, d_samples, seq)]
    names = ['host', 'dynamic']
    # FLOPs first (one untimed call of each model, before the warm-up): the reference's size
    # depends on the dynamic model's
    with _trace_safe(args):
        flops = [units[0][1](), units[1][1]()]
    if isinstance(ref, _RefHost):
        with _trace_safe(args):
            size = ref.choose(flops[1]['gflops_realised'], inputs, flops[0]['is_dynamic'])
        r_model = ref.model(size)
        r_inputs = _resized(inputs, size)
        units.append(_unit(r_model, timed, r_inputs, default_data_samples(r_model, n, size),
                           seq))
        names.append('ref')
        with _trace_safe(args):
            flops.append(dict(shape=list(size), **units[2][1]()))
    elif ref is not None:
        row.update(ref=None, ref_note=ref)
    if ref is not None and exit_idx is not None:
        for name, fn, gflops in _dvt_exit_units(dyn, d_inputs, exit_idx, bool(seq)):
            units.append((fn, None))
            names.append(name)
            flops.append(dict(gflops_realised=gflops))
    return row, [u[0] for u in units], flops, seq, names


def _time_pair(args, host, dyn, timed, shape, batch, level=None, method=None, ref=None):
    """One row: the host and the dynamic model on the same generated batch, alternating (with
    ``ref``, a :class:`_RefHost`: the reference as a third model; a string: why there is
    none). DVT at batch 1 with a level: a timed unit is ``--dvt-seq`` single-image calls on as
    many images, the latency reported per image."""
    import torch

    from mmdyn.analysis.benchmarking import alternating_times, latency_stats
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
    with torch.no_grad(), _autocast(args):
        row, fns, flops, seq, names = _setup_row(args, host, dyn, timed, shape, batch, level,
                                                 method, ref)
        times = alternating_times(fns, args.rounds, args.per_round, args.warmup, sync,
                                  args.min_seconds)
    if seq:  # per image
        times = [[t / seq for t in ts] for ts in times]
    stats = dict(zip(names, (latency_stats(ts, batch) for ts in times)))
    flops = dict(zip(names, flops))
    (hs, ds), (hf, df) = (stats['host'], stats['dynamic']), (flops['host'], flops['dynamic'])
    row.update(host={**hs, **hf}, dynamic={**ds, **df}, timed_calls=len(times[0]))
    row['speedup'] = hs['latency_ms_median'] / ds['latency_ms_median']
    row['flops_ratio'] = df['gflops_realised'] / hf['gflops_realised']
    row['efficiency'] = row['speedup'] * row['flops_ratio']

    def efficiency(name):  # host ms / ms x GFLOPs / host GFLOPs
        return (hs['latency_ms_median'] / stats[name]['latency_ms_median']
                * flops[name]['gflops_realised'] / hf['gflops_realised'])
    if 'ref' in stats:
        rs, rf = stats['ref'], flops['ref']
        row['ref'] = dict(**rf, **rs)
        row['ref_flops_ratio'] = rf['gflops_realised'] / hf['gflops_realised']
        row['ref_efficiency'] = efficiency('ref')
        row['dyn_vs_ref'] = (rs['latency_ms_median'] / ds['latency_ms_median']
                             * df['gflops_realised'] / rf['gflops_realised'])
    if 'cascade' in stats:
        row['dvt_exits'] = dict(
            cascade={**flops['cascade'], **stats['cascade']},
            exit1={**flops['exit1'], **stats['exit1']},
            cascade_efficiency=efficiency('cascade'), exit1_efficiency=efficiency('exit1'),
            dyn_vs_cascade=stats['cascade']['latency_ms_median'] / ds['latency_ms_median'])
    return row


#: profiled calls of each model, level and number of top ops of ``--profile``
PROFILE_CALLS, PROFILE_LEVEL, PROFILE_TOP = 3, 0.5, 15


def _profile(args, host, dyn, timed, shape, batch, method=None, ref=None):
    """torch.profiler (CPU activities) over :data:`PROFILE_CALLS` calls of host, dynamic (and
    reference) at the current decisions, after ``--warmup`` untimed calls of each: per model the
    top :data:`PROFILE_TOP` ops by self CPU time (summed over the calls) and their share of the
    model's total self CPU time; and the operator dispatches of one more call (a DVT sequence:
    per single-image call; :func:`~mmdyn.analysis.benchmarking.count_dispatches`)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from mmdyn.analysis.benchmarking import count_dispatches
    cuda = args.device == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    out = []
    with torch.no_grad(), _autocast(args):
        row, fns, flops, seq, names = _setup_row(args, host, dyn, timed, shape, batch,
                                                 PROFILE_LEVEL, method, ref)
        for name, fn, fl in zip(names, fns, flops):
            if name not in ('host', 'dynamic', 'ref'):
                continue
            for _ in range(args.warmup):
                fn()
            sync()
            with profile(activities=activities) as prof:
                for _ in range(PROFILE_CALLS):
                    fn()
                    sync()
            dispatches = count_dispatches(fn) / (seq or 1)  # per call (DVT sequence: per image)
            averages = prof.key_averages()
            events = [e for e in averages if e.self_cpu_time_total > 0]
            total = sum(e.self_cpu_time_total for e in events)  # us
            top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:PROFILE_TOP]
            # CUDA: the time the GPU was busy (the kernel events only: a CPU op's device time
            # already holds its kernels'), against the latency in the table
            busy = (sum(e.self_device_time_total for e in averages
                        if e.device_type == DeviceType.CUDA
                        and not getattr(e, 'is_user_annotation', False)) / 1e3
                    if cuda else None)
            out.append(dict(
                model=name, shape=list(fl.get('shape', shape)),
                gflops_realised=fl['gflops_realised'], self_cpu_ms_total=total / 1e3,
                device_busy_ms_total=busy, dispatches_per_call=dispatches,
                ops=[dict(op=e.key, calls=e.count, self_ms=e.self_cpu_time_total / 1e3,
                          percent=100. * e.self_cpu_time_total / total) for e in top]))
    return dict(level=PROFILE_LEVEL, batch=batch, dvt_seq=seq or None, calls=PROFILE_CALLS,
                exit_share_realised=row.get('exit_share_realised'), ref_note=row.get('ref_note'),
                models=out)


def format_profile(out: dict) -> str:
    """profile.md: per method and model the top ops by self CPU time."""
    lines = [f'# Where the time goes: torch.profiler, CPU activities (device '
             f'{out["device_name"]}' + (f', {out["threads"]} threads' if out['threads'] else '')
             + f', {out["amp"] or "fp32"}' + (', tiny configs' if out['tiny'] else '') + ')', '',
             f'Each model: {PROFILE_CALLS} profiled calls after {out["warmup"]} warm-up calls; '
             'per op (the top ones by self CPU time: time in the op itself, not in the ops it '
             'calls) its calls and self CPU ms summed over the profiled calls, and its share of '
             'the model\'s total self CPU time. On CUDA the ops are the CPU side (launches, '
             'synchronisation); "GPU busy" is the kernels\' time over the same calls: far below '
             'the latency of the table, the GPU waited for the host.']
    for p in out['profiles']:
        seq = f' (a sequence of {p["dvt_seq"]} single-image calls)' if p['dvt_seq'] else ''
        if p.get('exit_share_realised') is not None:
            seq += f', exit share at exit 1 {p["exit_share_realised"]:.3f}'
        lines += ['', f'## {p["method"]}: level {p["level"]:.2f}, batch {p["batch"]}{seq}']
        if p.get('ref_note'):
            lines += ['', f'No ref: {p["ref_note"]}.']
        for m in p['models']:
            lines += ['', f'**{m["model"]}** ({m["shape"][0]}x{m["shape"][1]}, '
                      f'{m["gflops_realised"]:.4f} GFLOPs per image, '
                      f'{m["dispatches_per_call"]:.0f} operator dispatches per call): total '
                      f'self CPU {m["self_cpu_ms_total"]:.2f} ms'
                      + (f', GPU busy {m["device_busy_ms_total"]:.2f} ms'
                         if m.get('device_busy_ms_total') is not None else ''), '',
                      '| op | calls | self ms | % of total |', '| --- | --- | --- | --- |']
            lines += [f'| {o["op"].replace("|", "/")} | {o["calls"]} | {o["self_ms"]:.3f} | '
                      f'{o["percent"]:.2f} |' for o in m['ops']]
    return '\n'.join(lines)


def _with_targets(samples, inputs):
    """Class-0 ground truth on generated data samples (segmentation maps of the padded input
    size, classification labels) so that ``mode='loss'`` runs."""
    import torch
    if samples is None:
        return samples
    for s in samples:
        if hasattr(s, 'set_gt_label'):
            s.set_gt_label(0)
        elif type(s).__name__ == 'SegDataSample':
            from mmengine.structures import PixelData
            s.gt_sem_seg = PixelData(data=torch.zeros(
                1, *inputs.shape[-2:], dtype=torch.long, device=inputs.device))
    return samples


#: MSViT training rows: the gate's probability of "fine" and the adaptive-trimming settings
TRAIN_P_FINE, TRAIN_TRIMMING = 0.5, (True, False)


def _msvit_gate_at(model, p_fine):
    """A copy of an MSViT model whose gate gives every region the logit ``log(p / (1 - p))``
    (last layer: weight 0, that bias), i.e. "fine" with probability ``p_fine`` under the
    training Gumbel noise, independently per region and image."""
    import copy
    import math

    import torch
    out = copy.deepcopy(model)
    last = out.backbone.tokenizer.gate.proj[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.log(p_fine / (1 - p_fine)))
    return out


def _train_step_row(args, host, dyn, shape, batch, method=None):
    """Median training step (loss forward, backward, SGD step) of each model, in alternating
    rounds, and CUDA peak memory (one more untimed step each). MSViT: also a copy of the
    dynamic model with its gate at ``P(fine) = TRAIN_P_FINE`` (:func:`_msvit_gate_at`),
    ``adaptive_trimming`` on and off (``variants``; ``trimming_speedup`` = off / on)."""
    import statistics

    import torch

    from mmdyn.analysis.benchmarking import alternating_times
    from mmdyn.analysis.complexity import generated_batch
    cuda = args.device == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    models = [('host', host, None), ('dynamic', dyn, None)]
    if method == 'msvit':
        gated = _msvit_gate_at(dyn, TRAIN_P_FINE)
        models += [(f'P(fine) {TRAIN_P_FINE:g}, trimming {"on" if t else "off"}', gated, t)
                   for t in TRAIN_TRIMMING]
    fine = {name: [] for name, _, _ in models}
    steps = []
    for name, model, trimming in models:
        inputs, samples = generated_batch(model, shape, batch)
        samples = _with_targets(samples, inputs)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

        def step(name=name, model=model, trimming=trimming, inputs=inputs, samples=samples,
                 opt=opt):
            if trimming is not None:
                model.backbone.adaptive_trimming = trimming
            opt.zero_grad(set_to_none=True)
            with _autocast(args):
                losses = model(inputs, samples, mode='loss')
            loss, _ = model.parse_losses(losses)
            loss.backward()
            opt.step()
            if trimming is not None:
                fine[name].append(float(model.backbone.last_stats['fine_ratio'].mean()))
        steps.append(step)
    for _, model, _ in models:
        model.train()
    times = alternating_times(steps, args.rounds, 1, args.warmup, sync)
    peaks = []
    for step in steps:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            step()
            sync()
        peaks.append(torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
    for _, model, _ in models:
        model.eval()
    res = [dict(step_ms_median=statistics.median(t) * 1e3, peak_mem_mib=m)
           for t, m in zip(times, peaks)]
    out = dict(batch=batch, shape=list(shape), host=res[0], dynamic=res[1])
    out['train_speedup'] = res[0]['step_ms_median'] / res[1]['step_ms_median']
    if len(models) > 2:
        out['variants'] = [
            dict(name=name, p_fine=TRAIN_P_FINE, adaptive_trimming=trimming,
                 fine_share_realised=statistics.fmean(fine[name]), **r,
                 train_speedup=res[0]['step_ms_median'] / r['step_ms_median'])
            for (name, _, trimming), r in zip(models[2:], res[2:])]
        on, off = (v['step_ms_median'] for v in out['variants'])
        out['trimming_speedup'] = off / on
    return out


def run(args) -> dict:
    import torch

    from mmdyn.models.utils.dynamic import decisions_overridden
    if args.device == 'cuda' and not torch.cuda.is_available():
        from mmdyn.analysis.complexity import ConfigError
        raise ConfigError('--device cuda: CUDA is not available')
    if args.threads:
        torch.set_num_threads(args.threads)
    # full-size CPU rows: the same malloc state whatever ran before (tiny rows test the logic)
    pinned = pin_glibc_malloc() if args.device == 'cpu' and not args.tiny else None
    pairs = TINY if args.tiny else FULL
    t0 = time.perf_counter()
    rows, train_rows, profiles = [], [], []
    for method in args.methods:
        h_cfg, h_opts, d_cfg, d_opts, shape, timed = pairs[method]
        _, host = _build(h_cfg, h_opts, args.device)
        knob_name, knob = KNOBS[method]
        _, dyn = _build(d_cfg, d_opts, args.device)
        ref = None
        if args.ref:
            spec = (TINY_REF if args.tiny else REF)[method]
            ref = spec if isinstance(spec, str) else _RefHost(
                args, host, timed, shape, spec['stride'], spec.get('rebuild'), h_cfg, h_opts)
        for level in args.levels:
            for batch in args.batches:
                with decisions_overridden(dyn, knob and knob(level)):
                    row = _time_pair(args, host, dyn, timed, shape, batch, level, method, ref)
                row.update(method=method, knob=knob_name, host_config=osp.relpath(h_cfg, REPO),
                           dynamic_config=osp.relpath(d_cfg, REPO), timed=timed)
                rows.append(row)
                msg = ''
                if row.get('ref'):
                    msg = (f'; ref {"x".join(map(str, row["ref"]["shape"]))}: efficiency '
                           f'{row["ref_efficiency"]:.3f}, dynamic / ref {row["dyn_vs_ref"]:.3f}')
                print(f'[{time.perf_counter() - t0:7.1f}s] {method} level {level} batch '
                      f'{batch}: speed-up {row["speedup"]:.3f}x, FLOPs ratio '
                      f'{row["flops_ratio"]:.3f}, efficiency {row["efficiency"]:.3f}{msg}',
                      file=sys.stderr, flush=True)
        if args.profile:
            with decisions_overridden(dyn, knob and knob(PROFILE_LEVEL)):
                prof = _profile(args, host, dyn, timed, shape, args.profile_batch, method, ref)
            profiles.append(dict(method=method, **prof))
        if args.train and not args.quick:
            tr = _train_step_row(args, host, dyn, shape, max(args.batches), method)
            tr.update(method=method)
            train_rows.append(tr)
        del host, dyn, ref
        if args.device == 'cuda':
            torch.cuda.empty_cache()
    return dict(device=args.device, device_name=(torch.cuda.get_device_name()
                                                 if args.device == 'cuda' else 'cpu'),
                threads=torch.get_num_threads() if args.device == 'cpu' else None,
                allocator=pinned or allocator_note(), amp=args.amp, quick=args.quick,
                tiny=args.tiny,
                ref=args.ref,
                rounds=args.rounds, per_round=args.per_round, warmup=args.warmup,
                min_seconds=args.min_seconds,
                levels=args.levels, batches=args.batches, dvt_seq=args.dvt_seq,
                unit='ms per batch (dvt batch 1: per image); throughput in images/s; GFLOPs per '
                'image (1 FLOP = 1 multiply-add)', rows=rows, train_rows=train_rows,
                profiles=profiles, seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------------------ outputs
def format_markdown(out: dict) -> str:
    ref = out.get('ref', False)
    lines = [f'Device {out["device_name"]}' + (f', {out["threads"]} threads' if out['threads']
                                               else '') + f', {out["amp"] or "fp32"}, '
             f'{out["rounds"]} alternating rounds x {out["per_round"]} calls after '
             f'{out["warmup"]} warm-up calls' + (
                 f', more rounds (up to {10 * out["rounds"]}) until a row\'s timed calls took '
                 f'{out["min_seconds"]:g} s' if out.get('min_seconds') else '')
             + (', tiny configs' if out['tiny'] else '')
             + (f', host allocator {out["allocator"]}' if out.get('allocator') else ''), '',
             '| method | level | batch | host ms (IQR) | dynamic ms (IQR) | host img/s | '
             'dynamic img/s | host GFLOPs | dynamic GFLOPs | FLOPs ratio | speed-up | '
             'efficiency |' + (' ref input | ref ms (IQR) | ref GFLOPs | ref efficiency | '
                               'dynamic / ref |' if ref else ''),
             '|' + ' --- |' * (17 if ref else 12)]
    for r in out['rows']:
        h, d = r['host'], r['dynamic']
        batch = f'{r["batch"]}' + (f' (seq {r["dvt_seq"]})' if r.get('dvt_seq') else '')
        line = (f'| {r["method"]} | {r["level"]:.2f} | {batch} | '
                f'{h["latency_ms_median"]:.2f} ({h["latency_ms_iqr"]:.2f}) | '
                f'{d["latency_ms_median"]:.2f} ({d["latency_ms_iqr"]:.2f}) | '
                f'{h["throughput_img_s"]:.1f} | {d["throughput_img_s"]:.1f} | '
                f'{h["gflops_realised"]:.4f} | {d["gflops_realised"]:.4f} | '
                f'{r["flops_ratio"]:.3f} | {r["speedup"]:.3f} | {r["efficiency"]:.3f} |')
        if ref and r.get('ref'):
            f = r['ref']
            line += (f' {f["shape"][0]}x{f["shape"][1]} | '
                     f'{f["latency_ms_median"]:.2f} ({f["latency_ms_iqr"]:.2f}) | '
                     f'{f["gflops_realised"]:.4f} | {r["ref_efficiency"]:.3f} | '
                     f'{r["dyn_vs_ref"]:.3f} |')
        elif ref:
            line += ' - | - | - | - | - |'
        lines.append(line)
    exits = [r for r in out['rows'] if r.get('dvt_exits')]
    if exits:
        lines += ['', 'DVT\'s exits as static models, timed in the same alternating rounds: the '
                  'static cascade runs the exits back to back on the images the dynamic model '
                  'sent to each (its FLOPs, no confidences or thresholds); exit 1 runs alone on '
                  'every image. Efficiency = host ms / ms x GFLOPs / host GFLOPs. The static '
                  'cascade bounds the early-exit model: dynamic / static cascade (its ms / the '
                  'dynamic ms) near 1 means the decisions and their records cost nothing and '
                  'what is left is the exits\' own speed; exit 1 efficiency is the first exit '
                  '(its few tokens; it hands its attention logits on where they are reused) '
                  'against the host on this device.', '',
                  '| exit share | batch | dynamic efficiency | static cascade ms (IQR) | '
                  'static cascade efficiency | dynamic / static cascade | exit 1 ms (IQR) | '
                  'exit 1 GFLOPs | exit 1 efficiency |', '|' + ' --- |' * 9]
        for r in exits:
            e = r['dvt_exits']
            c, x1 = e['cascade'], e['exit1']
            batch = f'{r["batch"]}' + (f' (seq {r["dvt_seq"]})' if r.get('dvt_seq') else '')
            lines.append(
                f'| {r["level"]:.2f} | {batch} | {r["efficiency"]:.3f} | '
                f'{c["latency_ms_median"]:.2f} ({c["latency_ms_iqr"]:.2f}) | '
                f'{e["cascade_efficiency"]:.3f} | {e["dyn_vs_cascade"]:.3f} | '
                f'{x1["latency_ms_median"]:.2f} ({x1["latency_ms_iqr"]:.2f}) | '
                f'{x1["gflops_realised"]:.4g} | {e["exit1_efficiency"]:.3f} |')
    if out['train_rows']:
        lines += ['', '| method | batch | host train step ms | dynamic train step ms | '
                  'train speed-up | host peak MiB | dynamic peak MiB |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        def mem(x):
            return '-' if x is None else f'{x:.0f}'
        variants = []
        for r in out['train_rows']:
            for name, d, sp in [('', r['dynamic'], r['train_speedup'])] + [
                    (f' ({v["name"]})', v, v['train_speedup']) for v in r.get('variants', [])]:
                lines.append(f'| {r["method"]}{name} | {r["batch"]} | '
                             f'{r["host"]["step_ms_median"]:.2f} | {d["step_ms_median"]:.2f} | '
                             f'{sp:.3f} | {mem(r["host"]["peak_mem_mib"])} | '
                             f'{mem(d["peak_mem_mib"])} |')
            if r.get('variants'):
                variants.append(
                    f'{r["method"]}: the dynamic model with its gate at P(fine) '
                    f'{r["variants"][0]["p_fine"]:g} (the last gate layer\'s weight 0 and bias '
                    'logit(p): each region fine with that probability under the training Gumbel '
                    'noise; realised fine share '
                    + ' / '.join(f'{v["fine_share_realised"]:.2f}' for v in r['variants'])
                    + '), adaptive trimming on / off; trimming speed-up (off / on) '
                    f'{r["trimming_speedup"]:.3f}')
        lines += ['', 'Training steps in alternating rounds (the SGD step included); the '
                  'dynamic model\'s decisions are its own (not forced).'
                  + (' ' + '. '.join(variants) + '.' if variants else '')]
    lines += ['', 'level: each method\'s forcing knob (' + '; '.join(
        f'{m}: {KNOBS[m][0]}' for m in METHODS) + '). speed-up = host median / dynamic median; '
        'FLOPs ratio = dynamic / host realised GFLOPs per image (models\' records); efficiency '
        '= speed-up x FLOPs ratio (1 = time falls as the FLOPs do).']
    seqs = sorted({r['dvt_seq'] for r in out['rows'] if r.get('dvt_seq')})
    if seqs:
        lines[-1] += (
            f' dvt batch 1 (seq N): a timed unit is N = {"/".join(map(str, seqs))} '
            'single-image calls on N different images, thresholds solved on them so that '
            'round(level x N) stop at exit 1 (realised share in the JSON); ms per image (unit / '
            'N), GFLOPs the mean over the N images\' records.')
    if ref:
        lines[-1] += (
            ' ref: the static host at the smaller input (sides multiples of its stride, aspect '
            'within 2:1) whose GFLOPs per image are closest to the dynamic model\'s, timed in '
            'the same alternating rounds; ref efficiency = host ms / ref ms x ref GFLOPs / host '
            'GFLOPs (below a target: no model of those FLOPs reaches it on this device); '
            'dynamic / ref = ref ms / dynamic ms x dynamic GFLOPs / ref GFLOPs (>= 1: the '
            'dynamic model turns its FLOP saving into time as well as a dense model of equal '
            'FLOPs).')
        notes = sorted({f'{r["method"]}: {r["ref_note"]}' for r in out['rows']
                        if r.get('ref_note')})
        if notes:
            lines[-1] += ' No ref: ' + '; '.join(notes) + '.'
    return '\n'.join(lines)


def plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 4.5))
    refs = [r for r in out['rows'] if r.get('ref')]
    ratios = [r['flops_ratio'] for r in out['rows']] + [r['ref_flops_ratio'] for r in refs]
    lo, hi = min(ratios + [0.2]) * 0.9, max(ratios + [1.0]) * 1.1
    x = np.linspace(lo, hi, 200)
    ax.plot(x, 1 / x, 'k--', label='ideal: speed-up = 1 / FLOPs ratio')
    markers = {1: 'o', 8: 's', 32: '^', 64: 'D'}
    for i, m in enumerate(dict.fromkeys(r['method'] for r in out['rows'])):
        for r in (r for r in out['rows'] if r['method'] == m):
            ax.scatter(r['flops_ratio'], r['speedup'], color=f'C{i}',
                       marker=markers.get(r['batch'], 'x'))
            if r.get('ref'):  # the static host at a smaller input: open markers
                mk = markers.get(r['batch'])
                ax.scatter(r['ref_flops_ratio'], r['host']['latency_ms_median']
                           / r['ref']['latency_ms_median'], marker=mk or '+',
                           **(dict(facecolors='none', edgecolors=f'C{i}') if mk
                              else dict(color=f'C{i}')))
        ax.scatter([], [], color=f'C{i}', label=m)
    for b, mk in markers.items():
        if b in out['batches']:
            ax.scatter([], [], color='gray', marker=mk, label=f'batch {b}')
    if refs:
        ax.scatter([], [], facecolors='none', edgecolors='gray', marker='o',
                   label='open (+): static host, smaller input')
    ax.set_xlabel('FLOPs ratio (dynamic or reference / host)')
    ax.set_ylabel('speed-up (host latency / dynamic or reference latency)')
    ax.set_title(f'{out["device_name"]}, {out["amp"] or "fp32"}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=120)
    plt.close(fig)


def main(argv=None):
    from mmdyn.analysis.complexity import stdout_to_stderr
    from mmdyn.utils.cli import friendly_errors
    try:
        with friendly_errors(None, code=1):
            args = parse_args(argv)
            with stdout_to_stderr():  # stdout carries the table only
                out = run(args)
                os.makedirs(args.out_dir, exist_ok=True)
                text = format_markdown(out)
                with open(osp.join(args.out_dir, 'suite.md'), 'w') as f:
                    f.write(text + '\n')
                with open(osp.join(args.out_dir, 'suite.json'), 'w') as f:
                    json.dump(out, f, indent=1)
                plot(out, osp.join(args.out_dir, 'suite.png'))
                if out['profiles']:
                    with open(osp.join(args.out_dir, 'profile.md'), 'w') as f:
                        f.write(format_profile(out) + '\n')
    except SystemExit as e:
        return e.code
    print(text)
    print(f'wrote {osp.join(args.out_dir, "suite.md")}, suite.json, suite.png'
          + (', profile.md' if out['profiles'] else '') + ' '
          f'({out["seconds"]:.0f} s)', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
