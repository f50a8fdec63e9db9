"""Log what the dynamic modules of a model actually computed.

Training: after every iteration, the batch means of the per-image records of the forward
(:func:`mmdyn.models.utils.records.summarize_dynamic_records`; in distributed training over the
images of every rank's batch) go to the message hub as
``train/dyn_<key>``: every ratio the modules report (``kept_ratio``, ``fine_ratio``,
``exit_ratio``, ...), ``flops_ratio`` (realised / static FLOPs of each image when the modules can
say their static FLOPs for the input shape, else what they report as ``flops_ratio``) and
``gflops`` (realised GFLOPs per image, 1 GFLOP = 1e9 multiply-adds). ``LoggerHook`` prints them
(their latest value, as for the learning rate) and passes them to the visual backends.

Validation and test: the hook installs :func:`attach_dynamic_records` (so the data samples carry
``dynamic_flops`` / ``dynamic_stats``, which :class:`mmdyn.evaluation.ComplexityMetric` reads),
accumulates the per-image values of the epoch over all ranks (without the images a
distributed sampler repeats to give every rank as many, as the metrics drop them) and writes
their means as
``val/dyn_<key>`` / ``test/dyn_<key>`` to the message hub at the end of the epoch. ``LoggerHook``
prints both and sends the validation ones to the visual backends; the hook sends the test ones
itself with ``runner.visualizer.add_scalars`` (``LoggerHook`` does not do that for tests).
"""
import math
from typing import Dict, List, Optional

from mmengine.dist import all_gather_object, get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook

from mmdyn.models.utils.records import (attach_dynamic_records, samples_records,
                                        summarize_dynamic_records)
from mmdyn.registry import HOOKS


def _summary_means(summary) -> Dict[str, float]:
    out = {'gflops': float(summary['flops'].mean()) / 1e9}
    for k, v in summary['stats'].items():
        out[k] = float(v.mean())
    return out


def _padded_on_this_rank(loop) -> int:
    """Images at the end of this rank's epoch that the loop's sampler repeated so that every
    rank gets as many (mmengine's ``DefaultSampler`` with ``round_up``; its metrics drop them):
    0 or 1."""
    world = get_world_size()
    sampler = getattr(getattr(loop, 'dataloader', None), 'sampler', None)
    dataset = getattr(sampler, 'dataset', None)
    if world < 2 or not getattr(sampler, 'round_up', False) or dataset is None:
        return 0
    n = len(dataset)
    per_rank = math.ceil(n / world)
    # rank r reads positions r, r + world, ...; positions >= n repeat the first images
    return int(get_rank() + (per_rank - 1) * world >= n)


def _reduce_sums(gathered):
    """Add up ``[(sums, counts), ...]`` gathered from the ranks, key by key."""
    sums: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    for s, c in gathered:
        for k in s:
            sums[k] = sums.get(k, 0.0) + s[k]
            counts[k] = counts.get(k, 0) + c[k]
    return sums, counts


@HOOKS.register_module()
class DynamicStatsHook(Hook):
    """Log kept / fine / exit ratios and the realised FLOPs ratio of dynamic models.

    Args:
        interval (int): log training statistics every ``interval`` iterations (the values of
            that iteration's batch). Defaults to 1.
        prefix (str): name prefix of the logged keys. Defaults to ``'dyn_'``.
        log_eval (bool): accumulate and log validation / test averages. Defaults to True.
    """

    priority = 'NORMAL'  # must run before LoggerHook (BELOW_NORMAL) at the end of an epoch

    def __init__(self, interval: int = 1, prefix: str = 'dyn_', log_eval: bool = True) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'DynamicStatsHook: interval must be a positive int, got {interval!r}')
        self.interval = interval
        self.prefix = prefix
        self.log_eval = log_eval
        self._images: List[Dict[str, float]] = []  # this rank's per-image values, in order

    # -- installation -------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        attach_dynamic_records(runner.model)

    def before_val(self, runner) -> None:
        attach_dynamic_records(runner.model)

    def before_test(self, runner) -> None:
        attach_dynamic_records(runner.model)

    # -- training -----------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        summary = summarize_dynamic_records(runner.model)
        if is_distributed():
            # image-weighted means over the batches of every rank
            sums, counts = {}, {}
            if summary is not None:
                n = int(summary['flops'].numel())
                for k, v in _summary_means(summary).items():
                    sums[k], counts[k] = v * n, n
            sums, counts = _reduce_sums(all_gather_object((sums, counts)))
            means = {k: sums[k] / counts[k] for k in sorted(sums) if counts[k]}
        elif summary is None:
            return
        else:
            means = _summary_means(summary)
        for k, v in means.items():
            runner.message_hub.update_scalar(f'train/{self.prefix}{k}', v)

    # -- evaluation ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self._images = []

    def _accumulate(self, runner, outputs) -> None:
        records = samples_records(outputs) if isinstance(outputs, (list, tuple)) else []
        records = [r for r in records if r is not None]
        if records:
            for r in records:
                self._images.append(dict(gflops=r['flops'] / 1e9,
                                         **{k: float(v) for k, v in r['stats'].items()}))
            return
        # The model's outputs carry no records: read them from the model directly.
        summary = summarize_dynamic_records(runner.model)
        if summary is None:
            return
        stats = {k: v.tolist() for k, v in summary['stats'].items()}
        for i, f in enumerate(summary['flops'].tolist()):
            self._images.append(dict(gflops=f / 1e9, **{k: v[i] for k, v in stats.items()}))

    def _means(self, loop) -> Optional[Dict[str, float]]:
        images = self._images[:len(self._images) - _padded_on_this_rank(loop)]
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        for values in images:
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        sums, counts = _reduce_sums(all_gather_object((sums, counts)))
        self._reset()
        return {k: sums[k] / counts[k] for k in sorted(sums) if counts[k]}

    def before_val_epoch(self, runner) -> None:
        self._reset()

    def before_test_epoch(self, runner) -> None:
        self._reset()

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.log_eval:
            self._accumulate(runner, outputs)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.log_eval:
            self._accumulate(runner, outputs)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self.log_eval:
            return
        for k, v in self._means(runner.val_loop).items():
            runner.message_hub.update_scalar(f'val/{self.prefix}{k}', v)

    def after_test_epoch(self, runner, metrics=None) -> None:
        if not self.log_eval:
            return
        means = self._means(runner.test_loop)
        for k, v in means.items():
            runner.message_hub.update_scalar(f'test/{self.prefix}{k}', v)
        if means:
            runner.visualizer.add_scalars({f'test/{self.prefix}{k}': v for k, v in means.items()},
                                          step=runner.iter)
