"""Argument checks shared by mmdyn's methods and losses (one-line messages naming the argument).

``value_ranges`` (a class attribute ``{attribute: (low, high)}``) declares the range of a value a
:class:`~mmdyn.engine.DynamicScheduleHook` may move, so that a schedule leaving it is refused when
training starts rather than when the value crosses the edge.
"""
import math
from numbers import Number

from mmdyn.utils.errors import UserValueError

__all__ = ['check_loss_weight', 'NON_NEGATIVE', 'POSITIVE', 'UNIT']

#: ``value_ranges`` entries: ``[0, inf)``, ``(0, inf)`` and ``[0, 1]``.
NON_NEGATIVE = (0.0, None)
POSITIVE = (0.0, None, True, False)
UNIT = (0.0, 1.0)


def check_loss_weight(value, name: str = 'loss_weight', owner: str = '') -> float:
    """``float(value)`` when it is a finite number >= 0; otherwise a ``ValueError`` (a
    :class:`~mmdyn.utils.errors.UserError`) naming ``owner`` and the argument ``name``."""
    ok = (isinstance(value, Number) and not isinstance(value, bool)
          and math.isfinite(float(value)) and float(value) >= 0)
    if not ok:
        where = f'{owner}: ' if owner else ''
        raise UserValueError(f'{where}{name} must be a finite number >= 0, got {value!r}')
    return float(value)
