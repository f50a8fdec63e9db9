"""Move scalars of the model (budget targets, loss weights, temperatures, thresholds) along
schedules during training.

Example::

    custom_hooks = [
        dict(type='mmdyn.DynamicScheduleHook', schedules=[
            # budget target 1.0 -> 0.5 over the first 40k iterations, then held at 0.5
            dict(path='backbone.budget_target', type='linear',
                 start_value=1.0, end_value=0.5, begin=0, end=40000),
            # Gumbel temperature, cosine from 5 to 0.5, after a 1k-iteration warm-up from 1.0
            dict(path='backbone.gate.tau', type='cosine', start_value=5.0, end_value=0.5,
                 begin=0, end=80000, warmup=1000, warmup_value=1.0),
            # exit threshold per epoch: 0.9 for epochs 0-9, 0.95 for 10-19, 0.99 afterwards
            dict(path='backbone.exit_threshold', type='step', by_epoch=True,
                 milestones=[10, 20], values=[0.9, 0.95, 0.99]),
        ]),
    ]

A value is a pure function of the training progress ``t`` (``runner.iter``, the index of the
iteration about to run, or ``runner.epoch`` with ``by_epoch=True``), so that resuming continues the
schedule exactly. The hook also stores its state in the checkpoint
(``checkpoint['mmdyn_schedule']``) and, when a checkpoint is loaded outside training
(``runner.test()`` with ``load_from``), puts back on the model the values it had when the
checkpoint was saved.

Schedule types (``t`` below ``begin`` gives the first value, after ``end`` the last value):

``constant``  ``value`` (or ``start_value``) throughout.
``linear``    ``start_value`` to ``end_value`` linearly over ``[begin, end]``.
``cosine``    ``start_value`` to ``end_value`` along half a cosine over ``[begin, end]``.
``step``      ``values[k]`` after the k-th of the increasing ``milestones`` (``values`` has one
              entry more than ``milestones``), or ``start_value * gamma ** k``.

Warm-up (any type): ``warmup=N`` (same unit as ``t``) and ``warmup_value=w`` ramp linearly from
``w`` at ``begin`` to the schedule's own value at ``begin + N``; the schedule runs unchanged
around it. ``type='constant'`` with a warm-up is a plain warm-up.

A path is dotted: attributes of modules and objects, keys of dicts (``head.loss_cfg.weight``),
indices of lists and ``nn.ModuleList`` (``backbone.stages.2.tau``). A tensor target (buffer or
parameter, one element) is filled in place; anything else is replaced by a Python float.
"""
import math
from numbers import Number
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdyn.models.utils.dynamic import unwrap_model as _unwrap
from mmdyn.registry import HOOKS
from mmdyn.utils.errors import UserAttributeError, UserTypeError, UserValueError

_TYPES = ('constant', 'linear', 'cosine', 'step')
_CKPT_KEY = 'mmdyn_schedule'


class _Schedule:
    """One validated schedule; ``value(t)`` is a pure function of the progress ``t``."""

    _KEYS = {'path', 'type', 'by_epoch', 'begin', 'end', 'start_value', 'end_value', 'value',
             'milestones', 'values', 'gamma', 'warmup', 'warmup_value'}

    def __init__(self, cfg: Dict[str, Any]):
        if not isinstance(cfg, dict):
            raise UserTypeError(f'DynamicScheduleHook: a schedule must be a dict, got {cfg!r}')
        cfg = dict(cfg)
        unknown = set(cfg) - self._KEYS
        path = cfg.get('path')
        if not isinstance(path, str) or not path or any(not p for p in path.split('.')):
            raise UserValueError(f'DynamicScheduleHook: invalid path {path!r} (a dotted name such '
                             "as 'backbone.budget_target' is needed)")
        where = f"DynamicScheduleHook: schedule for '{path}'"
        if unknown:
            raise UserValueError(f'{where}: unknown keys {sorted(unknown)}; allowed: '
                             f'{sorted(self._KEYS)}')
        self.path = path
        self.type = cfg.get('type', 'linear')
        if self.type not in _TYPES:
            raise UserValueError(f'{where}: unknown type {self.type!r}; choose from {_TYPES}')
        self.by_epoch = cfg.get('by_epoch', False)
        if not isinstance(self.by_epoch, bool):
            raise UserValueError(f'{where}: by_epoch must be a bool, got {self.by_epoch!r}')

        def number(key, default=None, required=False):
            v = cfg.get(key, default)
            if v is None:
                if required:
                    raise UserValueError(f"{where}: '{key}' is required for type '{self.type}'")
                return None
            if isinstance(v, bool) or not isinstance(v, Number) or not math.isfinite(v):
                raise UserValueError(f"{where}: '{key}' must be a finite number, got {v!r}")
            return float(v)

        def count(key, default):
            v = cfg.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserValueError(f"{where}: '{key}' must be an integer >= 0, got {v!r}")
            return v

        self.begin = count('begin', 0)
        self.end = None
        self.start_value = self.end_value = None
        self.milestones: List[int] = []
        self.values: List[float] = []
        self._parse_values(cfg, where, number, count)
        self.warmup = count('warmup', 0)
        self.warmup_value = number('warmup_value')
        if self.warmup and self.warmup_value is None:
            raise UserValueError(f"{where}: 'warmup_value' is required when warmup > 0")
        if self.warmup and self.end is not None and self.begin + self.warmup > self.end:
            raise UserValueError(f'{where}: the warm-up (begin {self.begin} + warmup {self.warmup}) '
                             f'must end by end ({self.end})')
        self.cfg = cfg

    def _parse_values(self, cfg: dict, where: str, number: Callable, count: Callable) -> None:
        """The values of the schedule's type: ``start_value`` / ``end_value`` / ``end``, or
        the step type's ``milestones`` and ``values``."""
        if self.type == 'constant':
            v = number('value')
            if v is None:
                v = number('start_value', required=True)
            self.start_value = self.end_value = v
        elif self.type in ('linear', 'cosine'):
            self.start_value = number('start_value', required=True)
            self.end_value = number('end_value', required=True)
            if cfg.get('end') is None:
                raise UserValueError(f"{where}: 'end' is required for type '{self.type}'")
            self.end = count('end', None)
            if self.end <= self.begin:
                raise UserValueError(f'{where}: end ({self.end}) must be greater than begin '
                                 f'({self.begin})')
        else:  # step
            ms = cfg.get('milestones')
            if (not isinstance(ms, (list, tuple)) or not ms
                    or any(isinstance(m, bool) or not isinstance(m, int) for m in ms)):
                raise UserValueError(f"{where}: 'milestones' must be a non-empty list of integers, "
                                 f'got {ms!r}')
            if any(b <= a for a, b in zip(ms, ms[1:])) or ms[0] <= self.begin:
                raise UserValueError(f"{where}: 'milestones' must increase strictly and lie after "
                                 f'begin ({self.begin}), got {list(ms)}')
            self.milestones = list(ms)
            vals = cfg.get('values')
            if vals is not None:
                if cfg.get('gamma') is not None:
                    raise UserValueError(f"{where}: give either 'values' or 'gamma', not both")
                if (not isinstance(vals, (list, tuple)) or len(vals) != len(ms) + 1 or any(
                        isinstance(v, bool) or not isinstance(v, Number) for v in vals)):
                    raise UserValueError(f"{where}: 'values' must be {len(ms) + 1} numbers (one "
                                     f'more than the milestones), got {vals!r}')
                self.values = [float(v) for v in vals]
            else:
                start = number('start_value', required=True)
                gamma = number('gamma')
                if gamma is None:
                    raise UserValueError(f"{where}: type 'step' needs 'values' or 'start_value' "
                                     "and 'gamma'")
                self.values = [start * gamma**k for k in range(len(ms) + 1)]
            self.start_value, self.end_value = self.values[0], self.values[-1]

    def extremes(self):
        """``(lowest, highest)`` value the schedule ever gives (warm-up included)."""
        vals = [v for v in (self.start_value, self.end_value, self.warmup_value) if v is not None]
        vals += self.values
        return min(vals), max(vals)

    def _base(self, t: float) -> float:
        if self.type == 'constant':
            return self.start_value
        if self.type == 'step':
            k = sum(1 for m in self.milestones if t >= m)
            return self.values[k]
        p = min(max((t - self.begin) / (self.end - self.begin), 0.0), 1.0)
        if self.type == 'linear':
            return self.start_value + (self.end_value - self.start_value) * p
        span = self.start_value - self.end_value
        return self.end_value + span * (1 + math.cos(math.pi * p)) / 2

    def value(self, t: int) -> float:
        if self.warmup:
            if t < self.begin:
                return self.warmup_value
            if t < self.begin + self.warmup:
                target = self._base(self.begin + self.warmup)
                frac = (t - self.begin) / self.warmup
                return self.warmup_value + (target - self.warmup_value) * frac
        return self._base(t)


def _resolve(root: Any, path: str):
    """``(container, key, kind)`` of the last element of ``path``; raises naming the path."""
    obj = root
    parts = path.split('.')
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = '.'.join(parts[:i]) or type(root).__name__
        if isinstance(obj, dict):
            key = part if part in obj else (int(part) if part.lstrip('-').isdigit()
                                            and int(part) in obj else None)
            if key is None:
                raise UserAttributeError(f"DynamicScheduleHook: path '{path}' does not exist: "
                                     f"'{where}' is a dict without key '{part}'")
            kind = 'item'
        elif isinstance(obj, (list, tuple)):
            if not part.lstrip('-').isdigit() or not -len(obj) <= int(part) < len(obj):
                raise UserAttributeError(f"DynamicScheduleHook: path '{path}' does not exist: "
                                     f"'{where}' is a sequence of length {len(obj)}, no index "
                                     f"'{part}'")
            key, kind = int(part), 'item'
            if last and isinstance(obj, tuple):
                raise UserTypeError(f"DynamicScheduleHook: path '{path}' is an item of a tuple, "
                                'which cannot be set')
        else:
            if not hasattr(obj, part):
                raise UserAttributeError(f"DynamicScheduleHook: path '{path}' does not exist: "
                                     f"'{where}' ({type(obj).__name__}) has no attribute "
                                     f"'{part}'")
            key, kind = part, 'attr'
        if last:
            return obj, key, kind
        obj = obj[key] if kind == 'item' else getattr(obj, key)


def _get(container, key, kind):
    return container[key] if kind == 'item' else getattr(container, key)


def _check_scalar(path: str, current: Any) -> None:
    if isinstance(current, torch.Tensor):
        if current.numel() != 1:
            raise UserTypeError(f"DynamicScheduleHook: path '{path}' is a tensor with "
                            f'{current.numel()} elements; only scalars can be scheduled')
    elif current is not None and (isinstance(current, bool) or not isinstance(current, Number)):
        raise UserTypeError(f"DynamicScheduleHook: path '{path}' holds a {type(current).__name__}, "
                        'not a number')


def declared_range(root: Any, path: str):
    """``(name, range)`` of the scheduled value when an object along ``path`` declares it in a
    ``value_ranges`` dict (``{attribute: (low, high)}`` inclusive, or ``(low, high, low_open,
    high_open)``; None for an open end); ``None`` when nothing does."""
    obj = root
    parts = path.split('.')
    for i, part in enumerate(parts):
        ranges = getattr(obj, 'value_ranges', None)
        if isinstance(ranges, dict) and part in ranges:
            return f'{type(obj).__name__}.{part}', tuple(ranges[part])
        try:
            container, key, kind = _resolve(obj, part)
            obj = _get(container, key, kind)
        except (AttributeError, TypeError, KeyError, IndexError):
            return None
    return None


def _outside(value: float, rng) -> bool:
    lo, hi = rng[0], rng[1]
    lo_open, hi_open = (rng[2], rng[3]) if len(rng) == 4 else (False, False)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        return True
    return hi is not None and (value > hi or (hi_open and value == hi))


def _range_text(rng) -> str:
    lo, hi = rng[0], rng[1]
    lo_open, hi_open = (rng[2], rng[3]) if len(rng) == 4 else (False, False)
    return (('(' if lo_open or lo is None else '[') + ('-inf' if lo is None else f'{lo:g}') +
            ', ' + ('inf' if hi is None else f'{hi:g}') + (')' if hi_open or hi is None else ']'))


def set_by_path(root: Any, path: str, value: float) -> None:
    """Set the scalar at dotted ``path`` of ``root`` (tensors are filled in place)."""
    container, key, kind = _resolve(root, path)
    current = _get(container, key, kind)
    _check_scalar(path, current)
    if isinstance(current, torch.Tensor):
        with torch.no_grad():
            current.fill_(value)
    elif kind == 'item':
        container[key] = float(value)
    else:
        setattr(container, key, float(value))


def get_by_path(root: Any, path: str) -> Any:
    """The value at dotted ``path`` of ``root``."""
    container, key, kind = _resolve(root, path)
    return _get(container, key, kind)


def log_current_values(runner, keys) -> None:
    """Make the runner's log processor print ``train/<key>`` as the value of the iteration
    (mmengine averages keys matching its ``mean_pattern``, e.g. any with ``loss`` in the name,
    over the logging window)."""
    proc = getattr(runner, 'log_processor', None)
    custom = getattr(proc, 'custom_cfg', None)
    if custom is None:
        return
    taken = {c.get('log_name', c.get('data_src')) for c in custom}
    for key in keys:
        if key not in taken:
            custom.append(dict(data_src=key, method_name='current'))


@HOOKS.register_module()
class DynamicScheduleHook(Hook):
    """Set model scalars from schedules before every training iteration.

    Args:
        schedules (list[dict]): one dict per scalar, see the module docstring. Each path may
            appear once.
        log (bool): write ``train/<path>`` to the message hub every iteration, so that
            ``LoggerHook`` prints the values and the visual backends get them. Defaults to True.
        restore_on_load (bool): when a checkpoint with this hook's state is loaded, set the
            values stored there on the model at once (what a test run from a checkpoint wants;
            in training the next iteration recomputes them anyway). Defaults to True.
    """

    priority = 'ABOVE_NORMAL'  # before hooks of NORMAL priority that run the model (distillation)

    def __init__(self, schedules: Sequence[dict], log: bool = True,
                 restore_on_load: bool = True) -> None:
        if isinstance(schedules, dict):
            schedules = [schedules]
        if not isinstance(schedules, (list, tuple)) or not schedules:
            raise UserValueError('DynamicScheduleHook: schedules must be a non-empty list of dicts')
        self.schedules = [_Schedule(s) for s in schedules]
        paths = [s.path for s in self.schedules]
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise UserValueError(f'DynamicScheduleHook: paths scheduled more than once: {dup}; '
                             'use one schedule (with a warm-up) per path')
        self.log = log
        self.restore_on_load = restore_on_load
        self.current_values: Dict[str, float] = {}
        self.last_progress: Dict[str, Optional[int]] = {p: None for p in paths}

    # -- helpers ----------------------------------------------------------------------------
    def check_paths(self, model) -> None:
        """Raise if a path does not exist or does not hold a scalar."""
        model = _unwrap(model)
        for s in self.schedules:
            _check_scalar(s.path, get_by_path(model, s.path))
            found = declared_range(model, s.path)
            if found is None:
                continue
            name, rng = found
            for v in s.extremes():
                if _outside(v, rng):
                    raise UserValueError(
                        f"DynamicScheduleHook: the schedule of '{s.path}' reaches {v:g}, outside "
                        f'the range {_range_text(rng)} of {name}')

    def values_at(self, iteration: int, epoch: int) -> Dict[str, float]:
        """The value of every schedule at a given iteration / epoch."""
        return {s.path: s.value(epoch if s.by_epoch else iteration) for s in self.schedules}

    def _apply(self, runner, log: bool) -> None:
        model = _unwrap(runner.model)
        for s in self.schedules:
            t = runner.epoch if s.by_epoch else runner.iter
            v = s.value(t)
            set_by_path(model, s.path, v)
            self.current_values[s.path] = v
            self.last_progress[s.path] = t
            if log and self.log:
                runner.message_hub.update_scalar(f'train/{s.path}', v)

    # -- hook points --------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        self.check_paths(runner.model)
        if self.log:
            log_current_values(runner, [f'{s.path}' for s in self.schedules])

    def before_train(self, runner) -> None:
        from mmengine.runner import IterBasedTrainLoop
        loop = getattr(runner, '_train_loop', None)
        if isinstance(loop, IterBasedTrainLoop):
            by_epoch = [s.path for s in self.schedules if s.by_epoch]
            if by_epoch:
                print_log(f'DynamicScheduleHook: {by_epoch} are scheduled by epoch but the '
                          'training loop is iteration based (its epoch stays 0)',
                          logger='current', level=30)
        # So that a validation before the first iteration already sees the scheduled values.
        self._apply(runner, log=False)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._apply(runner, log=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[_CKPT_KEY] = dict(
            values=dict(self.current_values),
            progress=dict(self.last_progress),
            schedules=[dict(s.cfg) for s in self.schedules])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(_CKPT_KEY)
        if state is None:
            return
        saved = {s.get('path'): s for s in state.get('schedules', [])}
        for s in self.schedules:
            if s.path in saved and saved[s.path] != s.cfg:
                print_log(f"DynamicScheduleHook: the schedule of '{s.path}' differs from the "
                          'one in the checkpoint; the new one is used from here on',
                          logger='current', level=30)
        values = state.get('values', {})
        progress = state.get('progress', {})
        model = _unwrap(runner.model)
        for s in self.schedules:
            if s.path in values:
                self.current_values[s.path] = float(values[s.path])
                self.last_progress[s.path] = progress.get(s.path)
                if self.restore_on_load:
                    set_by_path(model, s.path, float(values[s.path]))
