"""Argument checks shared by mmdyn's methods and losses (one-line messages naming the argument).

``value_ranges`` (a class attribute ``{attribute: (low, high)}``) declares the range of a value a
:class:`~mmdyn.engine.DynamicScheduleHook` may move, so that a schedule leaving it is refused when
training starts rather than when the value crosses the edge.
"""
import copy
import math
from numbers import Number
from typing import Sequence

from mmdyn.utils.errors import UserValueError

__all__ = ['check_images', 'check_loss_weight', 'check_out_indices', 'parse_arch', 'NON_NEGATIVE', 'POSITIVE', 'UNIT']

#: ``value_ranges`` entries: ``[0, inf)``, ``(0, inf)`` and ``[0, 1]``.
NON_NEGATIVE = (0.0, None)
POSITIVE = (0.0, None, True, False)
UNIT = (0.0, 1.0)


def check_images(module, x, what: str = 'images') -> None:
    """A ``ValueError`` naming ``module``'s class unless ``x`` is ``[B, module.in_channels,
    H, W]``."""
    if x.dim() != 4 or x.shape[1] != module.in_channels:
        raise ValueError(f'{type(module).__name__} expects [B, {module.in_channels}, H, W] '
                         f'{what}, got {tuple(x.shape)}')


def check_loss_weight(value, name: str = 'loss_weight', owner: str = '') -> float:
    """``float(value)`` when it is a finite number >= 0; otherwise a ``ValueError`` (a
    :class:`~mmdyn.utils.errors.UserError`) naming ``owner`` and the argument ``name``."""
    ok = (isinstance(value, Number) and not isinstance(value, bool)
          and math.isfinite(float(value)) and float(value) >= 0)
    if not ok:
        where = f'{owner}: ' if owner else ''
        raise UserValueError(f'{where}{name} must be a finite number >= 0, got {value!r}')
    return float(value)


def check_out_indices(out_indices, num: int, what: str) -> tuple:
    """The sorted non-negative indices of ``out_indices`` (an int or a sequence, negative ones
    counted from the end) into ``num`` ``what`` (e.g. ``'stages'``); a ``ValueError`` when
    one is out of range."""
    out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    for i in out_indices:
        if not -num <= i < num:
            raise ValueError(f'out_indices {out_indices} out of range for {num} {what}')
    return tuple(sorted(i % num for i in out_indices))


def parse_arch(owner: type, arch, keys: Sequence[str], optional: Sequence[str] = ()) -> dict:
    """A copy of the settings of ``arch``: a name of ``owner.arch_zoo`` (case-insensitive) or a
    dict with every one of ``keys`` and nothing outside ``keys`` and ``optional``; anything
    else is a ``KeyError`` / ``TypeError`` naming ``owner``."""
    name = owner.__name__
    if isinstance(arch, str):
        if arch.lower() not in owner.arch_zoo:
            raise KeyError(f'{name}: unknown arch {arch!r}; choose one of '
                           f'{sorted(owner.arch_zoo)} or give a dict')
        return copy.deepcopy(owner.arch_zoo[arch.lower()])
    if not isinstance(arch, dict):
        raise TypeError(f'{name}: arch must be a str or a dict, got {type(arch)}')
    missing = [k for k in keys if k not in arch]
    if missing:
        raise KeyError(f'{name}: arch dict misses {missing} (needs {tuple(keys)})')
    unknown = set(arch) - set(keys) - set(optional)
    if unknown:
        raise KeyError(f'{name}: unknown arch keys {sorted(unknown)}')
    return copy.deepcopy(dict(arch))
