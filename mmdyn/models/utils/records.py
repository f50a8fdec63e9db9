"""Per-image dynamic records of one whole model forward, and how they reach the data samples.

:func:`collect_dynamic_records` reads what the dynamic modules recorded in their *last* call. A
model may call its dynamic backbone several times in one forward, though: mmseg's sliding-window
inference runs it once per window, test-time augmentation once per view. What one image really
cost is then the sum over those calls. :func:`attach_dynamic_records` installs forward hooks that
keep every call of every (outermost) dynamic module between the start and the end of a forward of
the top-level model, so that the per-image figures describe the whole forward. A test-time
augmentation wrapper (mmengine's ``BaseTTAModel``: its ``test_step`` runs the wrapped model once
per view and never calls its own forward) has its ``test_step`` bracketed instead: the merged
samples get the sums over the views.

The records protocol
--------------------
After ``attach_dynamic_records(model)``, every forward of ``model`` whose output is a list of data
samples (``mode='predict'``, what ``val_step`` / ``test_step`` and the inference APIs of mmdet,
mmseg and mmpretrain call) writes into the metainfo of each sample (``set_metainfo``):

``dynamic_flops``
    float: realised FLOPs of that image, summed over the dynamic modules and over every call
    they made during the forward (the project's unit: one multiply-add = one FLOP).
``dynamic_static_flops``
    float, only when every dynamic module can say its static FLOPs for the shape it ran on
    (``static_flops((H, W))`` of its 4-D input): the FLOPs of the same calls with every gate on.
``dynamic_stats``
    dict of floats: each ``last_stats`` key averaged over the modules and calls that report it;
    ``flops_ratio`` is ``dynamic_flops / dynamic_static_flops`` when the latter is known.

Metrics (:class:`mmdyn.evaluation.ComplexityMetric`) and hooks read them from there.

The auxiliary-losses protocol
-----------------------------
In a training forward a dynamic module may set ``aux_losses`` (a dict of scalar tensors whose
names start with ``loss``: budget, gate and similar losses that the codebase's own model knows
nothing about) through :meth:`DynamicModuleMixin.set_aux_losses`. After a forward of the
top-level model whose output is a loss dict (``mode='loss'``), the collector adds them to that
dict (summed over the calls of the forward), so ``parse_losses`` and the optimizer see them with
any mmdet, mmseg or mmpretrain model, unchanged. Calls whose
batch size differs from the number of samples cannot be split per image; the forward then writes
nothing and warns once.
"""
import collections
import functools
import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .dynamic import find_dynamic_modules
from .dynamic import unwrap_model as _unwrap

__all__ = ['attach_dynamic_records', 'detach_dynamic_records', 'get_record_collector',
           'summarize_dynamic_records', 'samples_records', 'DynamicRecordCollector']

_COLLECTOR_ATTR = '_mmdyn_record_collector'
# A forward of the top-level model rarely has more calls than this (sliding windows); the cap
# only bounds memory when dynamic modules are called without a top-level forward.
_MAX_CALLS = 4096


def _first_tensor(args, kwargs) -> Optional[torch.Tensor]:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def _is_sample_list(output) -> bool:
    if not isinstance(output, (list, tuple)) or len(output) == 0:
        return False
    from mmengine.structures import BaseDataElement
    return all(isinstance(o, BaseDataElement) for o in output)


class DynamicRecordCollector:
    """Keeps the records of every dynamic-module call of one top-level forward."""

    def __init__(self):
        self.calls = collections.deque(maxlen=_MAX_CALLS)
        self.handles = []
        # Keyed by module names (not ids) so that a deep copy of the model (EMA) stays coherent.
        self.hooked = set()
        self._last_seen = {}
        self._static_cache = {}
        self._warned = set()
        self.aux_losses: Dict[str, torch.Tensor] = {}

    # -- hooks ----------------------------------------------------------------------------
    def reset(self, *_args, **_kwargs) -> None:
        self.calls.clear()
        self.aux_losses = {}

    def _take_aux_losses(self, module) -> None:
        losses = getattr(module, 'aux_losses', None)
        if not losses:
            return
        for k, v in losses.items():
            self.aux_losses[k] = self.aux_losses[k] + v if k in self.aux_losses else v
        module.aux_losses = {}  # consumed

    def _module_hook(self, name, module, args, kwargs, output) -> None:
        self._take_aux_losses(module)
        flops = getattr(module, 'last_flops', None)
        if flops is None:
            return
        # A module that did not record in this call still holds its previous record.
        if self._last_seen.get(name) is flops:
            return
        self._last_seen[name] = flops
        static = None
        x = _first_tensor(args, kwargs)
        if x is not None and x.dim() == 4:
            static = self._static_flops(name, module, (int(x.shape[-2]), int(x.shape[-1])))
        stats = dict(getattr(module, 'last_stats', {}) or {})
        self.calls.append((flops.detach().double().cpu(), static,
                           {k: v.detach().double().cpu() for k, v in stats.items()}))

    def _static_flops(self, name, module, shape) -> Optional[float]:
        key = (name, shape)
        if key not in self._static_cache:
            try:
                value = float(module.static_flops(shape))
            except (NotImplementedError, TypeError, AttributeError):
                value = None
            self._static_cache[key] = value
        return self._static_cache[key]

    def _top_hook(self, module, args, kwargs, output):
        if isinstance(output, dict) and self.aux_losses:
            output = dict(output)
            for k, v in self.aux_losses.items():
                output[k] = output[k] + v if k in output else v
            self.aux_losses = {}
            return output
        if not _is_sample_list(output):
            return None
        summary = self.summary(batch_size=len(output))
        if summary is None:
            return
        for i, sample in enumerate(output):
            meta = dict(dynamic_flops=float(summary['flops'][i]),
                        dynamic_stats={k: float(v[i]) for k, v in summary['stats'].items()})
            if summary['static_flops'] is not None:
                meta['dynamic_static_flops'] = float(summary['static_flops'][i])
            sample.set_metainfo(meta)
        return None

    # -- reading --------------------------------------------------------------------------
    def _warn_once(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            warnings.warn(msg)

    def summary(self, batch_size: Optional[int] = None) -> Optional[Dict]:
        """Per-image records of the calls since the last top-level forward began.

        Returns ``None`` when no call was recorded (or the calls cannot be split per image), else
        ``dict(flops=Tensor[B], static_flops=Tensor[B] or None, stats={key: Tensor[B]})``.
        """
        calls = list(self.calls)
        if not calls:
            return None
        if batch_size is None:
            batch_size = calls[0][0].numel()
        if any(c[0].numel() != batch_size for c in calls):
            self._warn_once(
                'attach_dynamic_records: a dynamic module ran on a batch whose size differs from '
                f'the number of images ({batch_size}); per-image records are not written.')
            return None
        flops = sum(c[0].reshape(-1) for c in calls)
        static = None
        if all(c[1] is not None for c in calls):
            static = torch.full((batch_size, ), sum(c[1] for c in calls), dtype=torch.float64)
        sums: Dict[str, torch.Tensor] = {}
        counts: Dict[str, int] = {}
        for _, _, st in calls:
            for k, v in st.items():
                v = v.reshape(-1)
                if v.numel() != batch_size:
                    continue
                sums[k] = sums.get(k, 0) + v
                counts[k] = counts.get(k, 0) + 1
        stats = {k: sums[k] / counts[k] for k in sums}
        if static is not None:
            stats['flops_ratio'] = flops / static.clamp_min(1e-12)
        return dict(flops=flops, static_flops=static, stats=stats)


def _is_tta_model(model: nn.Module) -> bool:
    try:
        from mmengine.model import BaseTTAModel
    except ImportError:  # pragma: no cover - an mmengine without test-time augmentation
        return False
    return isinstance(model, BaseTTAModel)


class _InstanceAttribute:
    """Handle of an attribute set on one instance: ``remove()`` takes it away again."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def remove(self) -> None:
        self.obj.__dict__.pop(self.name, None)


def _bracket_tta_test_step(model: nn.Module, collector: DynamicRecordCollector):
    """Make the TTA wrapper's ``test_step`` a whole forward for the collector: reset before
    it, the merged samples written after it (every view's calls summed per image)."""
    step = model.test_step

    def test_step(data):
        collector.reset()
        outputs = step(data)
        collector._top_hook(model, (), {}, outputs)
        return outputs

    model.__dict__['test_step'] = test_step
    return _InstanceAttribute(model, 'test_step')


def get_record_collector(model: nn.Module) -> Optional[DynamicRecordCollector]:
    """The collector installed on ``model`` (unwrapped) by :func:`attach_dynamic_records`."""
    return getattr(_unwrap(model), _COLLECTOR_ATTR, None)


def attach_dynamic_records(model: nn.Module) -> Optional[DynamicRecordCollector]:
    """Make predict-mode forwards of ``model`` write per-image dynamic records into the samples.

    Idempotent: a second call only hooks dynamic modules that were not there at the first.
    Model wrappers (DDP, ...) are unwrapped. Returns the collector, or ``None`` when the model
    has no dynamic module.
    """
    model = _unwrap(model)
    dyn = {id(m) for m in find_dynamic_modules(model)}
    modules = [(n, m) for n, m in model.named_modules() if id(m) in dyn]
    collector = getattr(model, _COLLECTOR_ATTR, None)
    if collector is None:
        if not modules:
            return None
        collector = DynamicRecordCollector()
        # Module hooks are prepended and the top-level hook appended, so that when the top-level
        # model is itself a dynamic module its own call is recorded before the summary is read.
        collector.handles.append(
            model.register_forward_pre_hook(collector.reset, with_kwargs=True))
        collector.handles.append(
            model.register_forward_hook(collector._top_hook, with_kwargs=True))
        if _is_tta_model(model):
            collector.handles.append(_bracket_tta_test_step(model, collector))
        object.__setattr__(model, _COLLECTOR_ATTR, collector)
    for name, m in modules:
        if name not in collector.hooked:
            hook = functools.partial(collector._module_hook, name)
            collector.handles.append(m.register_forward_hook(hook, with_kwargs=True, prepend=True))
            collector.hooked.add(name)
    return collector


def detach_dynamic_records(model: nn.Module) -> None:
    """Remove what :func:`attach_dynamic_records` installed."""
    model = _unwrap(model)
    collector = getattr(model, _COLLECTOR_ATTR, None)
    if collector is None:
        return
    for h in collector.handles:
        h.remove()
    object.__delattr__(model, _COLLECTOR_ATTR)


def summarize_dynamic_records(model: nn.Module) -> Optional[Dict]:
    """Per-image records of the model's last forward.

    Uses the collector of :func:`attach_dynamic_records` when installed (all calls of the
    forward), else :func:`collect_dynamic_records` (the last call of each module; the static
    FLOPs are then unknown). Same return format as :meth:`DynamicRecordCollector.summary`.
    """
    collector = get_record_collector(model)
    if collector is not None:
        return collector.summary()
    from .dynamic import collect_dynamic_records
    rec = collect_dynamic_records(_unwrap(model))
    if rec is None:
        return None
    flops = rec.pop('flops').detach().double().cpu().reshape(-1)
    return dict(flops=flops, static_flops=None,
                stats={k: v.detach().double().cpu().reshape(-1) for k, v in rec.items()})


def samples_records(samples: Sequence) -> List[Optional[Dict]]:
    """Read the records protocol back from data samples (objects or the dicts evaluators see)."""
    out = []
    for s in samples:
        if isinstance(s, dict):
            get = s.get
        else:
            meta = getattr(s, 'metainfo', {}) or {}
            get = meta.get
        flops = get('dynamic_flops', None)
        if flops is None:
            out.append(None)
            continue
        out.append(dict(flops=float(flops), static_flops=get('dynamic_static_flops', None),
                        stats=dict(get('dynamic_stats', None) or {})))
    return out
