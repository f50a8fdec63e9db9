"""Loading mmengine checkpoints with ``torch.load(weights_only=True)`` (torch >= 2.6).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, which torch >= 2.6 turns on by
default, and its own checkpoints then fail to load on resume (the message hub holds
``HistoryBuffer`` objects and numpy arrays and scalars). Rather than turning the safe loader off
for everything, mmdyn allow-lists exactly the classes that mmengine's checkpoints contain.

One more thing stands in the way: ``HistoryBuffer.__getstate__`` pickles the class-wide table of
statistics *functions* (``HistoryBuffer.min`` ...), which unpickle through ``builtins.getattr``, a
global that must never be allow-listed. Those functions are class state that every process
rebuilds on import, so mmdyn makes ``HistoryBuffer`` pickle its data only.
"""
import numpy as np
import torch


def _numpy_globals():
    out = [np.ndarray, np.dtype]
    try:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    out += [_reconstruct, scalar]
    # numpy >= 1.25 pickles dtypes through their DType classes (np.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def _history_buffer_getstate(self) -> dict:
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def _history_buffer_setstate(self, state: dict) -> None:
    state = dict(state)
    state.pop('statistics_methods', None)  # checkpoints written without mmdyn carry it
    self._set_default_statistics()
    self.__dict__.update(state)


def patch_history_buffer_pickling() -> None:
    """Make ``HistoryBuffer`` pickle its logs only, not its class-wide statistics functions."""
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    HistoryBuffer.__setstate__ = _history_buffer_setstate


def mmengine_checkpoint_safe_globals():
    """The classes that an mmengine checkpoint (meta, message hub, optimizer) may pickle."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint classes for ``torch.load(weights_only=True)``.

    Returns False on a torch without ``torch.serialization.add_safe_globals`` (older than 2.4,
    where ``weights_only`` is off by default and nothing needs allowing).
    """
    patch_history_buffer_pickling()
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # pragma: no cover - old torch
        return False
    add(mmengine_checkpoint_safe_globals())
    return True
