"""Timing and FLOPs pieces shared by ``tools/analysis_tools/benchmark.py`` and
``tools/analysis_tools/benchmark_suite.py``.

* :func:`latency_stats`: median, spread (IQR, std), mean, min, max of per-call times and the
  throughput ``batch / median``;
* :func:`time_calls`: per-call wall times after untimed warm-up calls, with ``sync`` (e.g.
  ``torch.cuda.synchronize``) before and after each timed call;
* :func:`alternating_times`: several callables timed in alternating rounds (the order reversed
  every other round), so that slow drifts of a shared machine hit every callable alike, for at
  least a given number of rounds and, optionally, seconds;
* :func:`call_flops`: static and realised GFLOPs per image of a model call, from the models' own
  records (``model_complexity``: ``static_flops`` / ``last_flops``);
* :func:`count_dispatches`: operator calls that reach a kernel of a call (view and metadata
  operations included); on a GPU at small batch the latency follows this count more than
  the FLOPs, each call costing a few microseconds of host time and a kernel launch;
* :func:`allocator_note` and :func:`pin_glibc_malloc`: which host allocator CPU timings run
  with, and the state both tools set on the CPU (glibc keeping every freed buffer for reuse).
"""
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

__all__ = ['latency_stats', 'time_calls', 'alternating_times', 'call_flops', 'count_dispatches',
           'allocator_note', 'pin_glibc_malloc']


def latency_stats(times_s, batch):
    """Summary of per-call times (seconds) in ms, plus images/s at the median."""
    ms = sorted(t * 1e3 for t in times_s)
    n = len(ms)
    med = statistics.median(ms)
    if n >= 2:
        q = statistics.quantiles(ms, n=4, method='inclusive')
        q1, q3 = q[0], q[2]
        std = statistics.stdev(ms)
    else:
        q1 = q3 = ms[0]
        std = 0.
    return dict(latency_ms_median=med, latency_ms_iqr=q3 - q1, latency_ms_q1=q1,
                latency_ms_q3=q3, latency_ms_std=std, latency_ms_mean=statistics.fmean(ms),
                latency_ms_min=ms[0], latency_ms_max=ms[-1],
                throughput_img_s=batch / (med / 1e3) if med > 0 else float('inf'))


def time_calls(fn, repeats, warmup, sync=lambda: None):
    """Per-call wall times (s) of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def alternating_times(fns: Sequence[Callable], rounds: int, per_round: int, warmup: int,
                      sync: Callable = lambda: None, min_seconds: float = 0.,
                      max_rounds: Optional[int] = None) -> List[List[float]]:
    """Per-call wall times (s) of each of ``fns``: ``warmup`` untimed calls of each first, then
    ``rounds`` rounds of ``per_round`` timed calls of each, in the given order on even rounds and
    reversed on odd ones; then more rounds while the timed calls (all callables) have taken less
    than ``min_seconds`` in all, up to ``max_rounds`` (default ``10 * rounds``): a row of fast
    calls gets more samples, so a slow second of the machine moves its median less. Returns one
    list of ``n * per_round`` times per callable, ``n`` the rounds run."""
    max_rounds = 10 * rounds if max_rounds is None else max(int(max_rounds), rounds)
    out = [[] for _ in fns]
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync()
    r, spent = 0, 0.
    while r < rounds or (spent < min_seconds and r < max_rounds):
        order = list(range(len(fns)))
        if r % 2:
            order.reverse()
        for i in order:
            ts = time_calls(fns[i], per_round, 0, sync)
            out[i].extend(ts)
            spent += sum(ts)
        r += 1
    return out


def call_flops(model, inputs, samples, backbone_only) -> Dict:
    """Static and realised GFLOPs per image of the timed batch (realised = static for static
    models), from one more untimed run."""
    from mmdyn.analysis.complexity import model_complexity
    res = model_complexity(model, inputs=inputs, data_samples=samples,
                           backbone_only=backbone_only)
    static = float(res['flops']) / 1e9
    dyn = res.get('flops_dynamic')
    realised = static if dyn is None else float(dyn.mean()) / 1e9
    return dict(gflops_static=static, gflops_realised=realised,
                is_dynamic=bool(res['is_dynamic']))


def count_dispatches(fn: Callable) -> int:
    """The number of ATen operator calls that ``fn()`` dispatches to a backend (every operator
    a kernel runs for, views and factory functions included; composite operators counted by
    the operators they decompose into). Device independent: the same code dispatches the same
    operators on a CPU and a GPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    with _Count() as counter:
        fn()
    return counter.calls


#: glibc's malloc settings that decide whether freed large buffers go back to the system (any
#: other ``MALLOC_*_`` variable and ``GLIBC_TUNABLES``' ``glibc.malloc.*`` entries are named too)
MALLOC_VARS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_',
               'MALLOC_ARENA_MAX')


def allocator_note(environ=None) -> str:
    """Which host memory allocator the CPU timings ran with: a preloaded jemalloc / tcmalloc /
    mimalloc / tbbmalloc, or glibc's malloc with the settings given (``MALLOC_*`` variables,
    ``GLIBC_TUNABLES``' malloc entries; ``'glibc defaults'`` when none; another preloaded
    library is named as such). It moves CPU efficiencies: under glibc's defaults every call
    page-faults the buffers above its mmap threshold in again, which costs a full-size host
    more than a dynamic model (``docs/complexity.md``, "The allocator moves these ratios")."""
    env = os.environ if environ is None else environ
    preload = env.get('LD_PRELOAD', '')
    for name in ('jemalloc', 'tcmalloc', 'mimalloc', 'tbbmalloc'):
        if name in preload:
            return f'{name} (LD_PRELOAD)'
    if not sys.platform.startswith('linux'):
        return 'system malloc'
    keys = list(MALLOC_VARS) + sorted(k for k in env if k.startswith('MALLOC_') and
                                      k not in MALLOC_VARS)
    given = [f'{k}={env[k]}' for k in keys if env.get(k)]
    tunables = [t for t in env.get('GLIBC_TUNABLES', '').split(':')
                if t.startswith('glibc.malloc.')]
    if tunables:
        given.append('GLIBC_TUNABLES=' + ':'.join(tunables))
    if preload.strip():
        given.append(f'LD_PRELOAD={preload}')
    return 'glibc ' + (', '.join(given) if given else 'defaults')


#: glibc's mallopt parameters, and the trim threshold the suite sets (mallopt takes an int)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_TRIM = 2 ** 31 - 1


def pin_glibc_malloc(environ=None) -> Optional[str]:
    """Make glibc's malloc keep and reuse every freed buffer in this process (no buffer
    mmapped: ``M_MMAP_MAX`` 0; the heap trimmed only when more than 2 GiB at its top is free),
    where 64-bit glibc runs with no setting and nothing preloaded; returns the allocator note,
    or None where nothing was set (another allocator, the user's settings, no glibc).

    Why: glibc mmaps a buffer above its mmap threshold on every allocation and unmaps it when
    freed, so each call page-faults it in again. The threshold starts at 128 KiB and rises, as
    such buffers are freed, to at most 32 MiB, and never comes down: what ran before moves it.
    The larger model of a row (usually the host: PVT-S at 512 has 32 MiB hidden activations in
    its first stage, and every host at batch 8 has larger ones) then pays page faults its
    dynamic model, whose buffers are smaller, does not: an ``x @ w`` with a GELU writing two 32
    MiB outputs took 29.8 ms mmapped and 10.8 ms reused, at 128 MiB 110-121 against 44 ms.
    Reusing every buffer, as a caching allocator (jemalloc, tcmalloc, or PyTorch's on a GPU)
    does, times the computation the FLOPs count, whatever the methods and their order."""
    import ctypes
    env = os.environ if environ is None else environ
    if not sys.platform.startswith('linux') or sys.maxsize <= 2 ** 32 or \
            allocator_note(env) != 'glibc defaults':
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return None
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, KEEP_TRIM)):
        return None
    return 'glibc, every freed buffer kept for reuse (no mmap, no trim; set by the suite)'
