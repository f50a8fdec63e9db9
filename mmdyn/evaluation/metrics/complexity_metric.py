"""Average realised complexity per image, next to the task metrics.

::

    val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                     dict(type='mmdyn.ComplexityMetric')]
    custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]   # or attach_dynamic_records(model)

The metric reads the records protocol of :mod:`mmdyn.models.utils.records` from each predicted
data sample (``dynamic_flops``, ``dynamic_stats``, optionally ``dynamic_static_flops``) and
reports, as the mean over the images of the data set:

``complexity/gflops``          realised GFLOPs per image (1 GFLOP = 1e9 multiply-adds, the
                               project's unit; backbone dynamic modules only);
``complexity/static_gflops``   the same images with every gate on (when known);
``complexity/<key>``           every per-image ratio recorded, e.g. ``kept_ratio``,
                               ``fine_ratio``, ``exit_ratio``, ``flops_ratio``.

In distributed evaluation every rank keeps its images' values and :class:`BaseMetric` gathers
them before the means are taken.
"""
from typing import Any, Dict, List, Optional, Sequence

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmdyn.models.utils.records import samples_records
from mmdyn.registry import METRICS


@METRICS.register_module()
class ComplexityMetric(BaseMetric):
    """Mean realised GFLOPs and token ratios per image.

    Args:
        collect_device (str): device for gathering results across ranks. Defaults to ``'cpu'``.
        prefix (str, optional): key prefix. Defaults to ``'complexity'``.
        digits (int, optional): round the results to this many decimals. Defaults to None.
    """

    default_prefix = 'complexity'

    def __init__(self, collect_device: str = 'cpu', prefix: Optional[str] = None,
                 digits: Optional[int] = None, collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.digits = digits

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        for rec in samples_records(data_samples):
            # an empty dict (not None, which result gathering would drop) marks a sample
            # without records
            self.results.append(rec or {})

    def compute_metrics(self, results: List[Dict]) -> Dict[str, float]:
        records = [r for r in results if r]
        if not records:
            raise RuntimeError(
                'ComplexityMetric: none of the predicted data samples carries dynamic records '
                "('dynamic_flops' / 'dynamic_stats' in its metainfo). Add "
                "dict(type='mmdyn.DynamicStatsHook') to custom_hooks, or call "
                'mmdyn.models.utils.records.attach_dynamic_records(model) before inference; '
                'and check that the model has dynamic modules.')
        if len(records) < len(results):
            print_log(f'ComplexityMetric: {len(results) - len(records)} of {len(results)} '
                      'samples carry no dynamic records; they are left out of the averages',
                      logger='current', level=30)
        n = len(records)
        out = {'gflops': sum(r['flops'] for r in records) / n / 1e9}
        statics = [r['static_flops'] for r in records]
        if all(s is not None for s in statics):
            out['static_gflops'] = sum(statics) / n / 1e9
        keys = sorted({k for r in records for k in r['stats']})
        for k in keys:
            vals = [r['stats'][k] for r in records if k in r['stats']]
            out[k] = sum(vals) / len(vals)
        if self.digits is not None:
            out = {k: round(v, self.digits) for k, v in out.items()}
        return out
