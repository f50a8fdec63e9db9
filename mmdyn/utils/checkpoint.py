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
from collections import OrderedDict
from typing import Optional

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


# ------------------------------------------------------------------------ reading, one-line errors
_REMOTE = ('http://', 'https://', 's3://', 'open-mmlab://', 'torchvision://', 'mmcls://',
           'openmmlab://', 'pavi://')


def _unreadable_why(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words (never torch's advice to
    load with ``weights_only=False``)."""
    import re
    text = str(exc)
    m = re.search(r'Unsupported global: GLOBAL (\S+)', text)
    if m:
        return (f'it holds an object of class {m.group(1)}, which mmdyn does not unpickle; if '
                'the file is trusted, add the class to mmengine_checkpoint_safe_globals() in '
                'mmdyn/utils/checkpoint.py')
    if 'Unsupported operand' in text or 'invalid load key' in text or 'could not find MARK' \
            in text or isinstance(exc, UnicodeDecodeError):
        return 'not a torch checkpoint: unrecognised bytes'
    if isinstance(exc, EOFError):
        return 'it ends early: empty or truncated'
    if 'central directory' in text or 'zip archive' in text or isinstance(exc, OSError) or \
            'unexpected pos' in text or 'file_size' in text:
        return 'truncated or corrupt'
    first = ' '.join(text.split())[:200]
    return f'{type(exc).__name__}: {first}' if first else type(exc).__name__


def read_checkpoint(path: str, map_location='cpu') -> dict:
    """``torch.load(path, weights_only=True)`` of a local checkpoint, allow-listing mmengine's
    classes; anything else raises :class:`~mmdyn.utils.errors.UnreadableCheckpoint` with the
    one line ``not a readable checkpoint: FILE (why)``. Remote paths (URLs, ``open-mmlab://``)
    go through mmengine's ``CheckpointLoader``."""
    import os.path as osp

    from .errors import UnreadableCheckpoint
    path = str(path)
    if path.startswith(_REMOTE):
        from mmengine.runner.checkpoint import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    if not osp.exists(path):
        raise UnreadableCheckpoint(f'not a readable checkpoint: {path} (it does not exist)')
    if osp.isdir(path):
        raise UnreadableCheckpoint(f'not a readable checkpoint: {path} (it is a directory)')
    allow_mmengine_checkpoints()
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure is "unreadable", with its reason
        raise UnreadableCheckpoint(
            f'not a readable checkpoint: {path} ({_unreadable_why(e)})') from None
    if not isinstance(ckpt, dict):
        raise UnreadableCheckpoint(f'not a readable checkpoint: {path} (it holds a '
                                   f'{type(ckpt).__name__}, not a dict of tensors)')
    return ckpt


# Where checkpoints keep their weights, in the order they are looked for: mmengine and most
# codebases (``state_dict``), the public DVT code (``model_state_dict``), DeiT / timm (``model``),
# some DDP dumps (``module``). ``state_dict_ema`` (timm's EMA weights) comes first on request.
STATE_DICT_KEYS = ('state_dict', 'model_state_dict', 'model', 'module')


def unwrap_state_dict(ckpt, prefix: Optional[str] = None,
                      use_ema: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """The tensors of a checkpoint, the one place that knows how checkpoints wrap them.

    ``ckpt`` is a loaded checkpoint: a state dict, or a dict holding one under the first of
    :data:`STATE_DICT_KEYS` that maps to a dict (``state_dict_ema`` first when ``use_ema``).
    Non-tensor entries are dropped; a ``module.`` prefix on every key (a DDP dump) is removed.
    ``prefix`` (e.g. ``'backbone.'``) keeps only the keys under it, without it, and is a
    ``KeyError`` when no key has it. Raises ``TypeError`` when no dict is found.
    """
    sd = ckpt
    keys = (('state_dict_ema', ) if use_ema else ()) + STATE_DICT_KEYS
    for key in keys:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise TypeError(f'no state dict found in a checkpoint of type {type(ckpt).__name__}')
    sd = OrderedDict((k, v) for k, v in sd.items() if isinstance(v, torch.Tensor))
    if sd and all(k.startswith('module.') for k in sd):
        sd = OrderedDict((k[len('module.'):], v) for k, v in sd.items())
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd = OrderedDict((k[len(p):], v) for k, v in sd.items() if k.startswith(p))
        if not sd:
            raise KeyError(f'no key of the checkpoint starts with prefix {prefix!r}')
    return sd


def weights_key(ckpt) -> Optional[str]:
    """The key of ``ckpt`` its weights are under (the first of :data:`STATE_DICT_KEYS` that
    maps to a dict), or None for a bare state dict."""
    for key in STATE_DICT_KEYS:
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            return key
    return None


def loadable_checkpoint(path: str, ckpt: Optional[dict] = None,
                        out_dir: Optional[str] = None) -> str:
    """A checkpoint path that mmengine's ``load_checkpoint`` and the codebases' ``init_model``
    read as ``ckpt``'s weights (``ckpt``: the file read with :func:`read_checkpoint`; read here
    when not given).

    mmengine loads ``ckpt['state_dict']`` when there is one and else the whole dict, so weights
    kept under ``model`` (DeiT / timm), ``model_state_dict`` or ``module`` load nothing (only a
    warning about unexpected keys); ``mmseg.apis.init_model`` needs a ``meta`` dict. ``path``
    itself when the file holds ``state_dict`` and ``meta`` dicts (or is remote); else a file
    with the weights as ``state_dict`` (a ``module.`` prefix on every key removed) and the
    file's ``meta`` or an empty one: ``out_dir/<name>_mmengine.pth``, kept (a run's work dir,
    so that the config it saves names a file that stays; written atomically, as every process
    of a distributed run writes it), or without ``out_dir`` a temporary file removed when the
    process exits."""
    import atexit
    import os
    import tempfile
    if str(path).startswith(_REMOTE):
        return path
    if ckpt is None:
        ckpt = read_checkpoint(path)
    key = weights_key(ckpt)
    if key == 'state_dict' and isinstance(ckpt.get('meta'), dict):
        return path
    try:
        sd = unwrap_state_dict(ckpt)
    except TypeError:
        return path  # no weights at all: the caller's checks name the problem
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.splitext(os.path.basename(str(path)))[0]
        final = os.path.join(out_dir, f'{stem}_mmengine.pth')
        fd, tmp = tempfile.mkstemp(prefix=f'.{stem}_', suffix='.pth', dir=out_dir)
        os.close(fd)
        torch.save({'state_dict': sd, 'meta': meta}, tmp)
        os.replace(tmp, final)  # atomic: a process reading it never sees half a file
        tmp = final
    else:
        fd, tmp = tempfile.mkstemp(prefix='mmdyn_ckpt_', suffix='.pth')
        os.close(fd)
        atexit.register(lambda: os.path.exists(tmp) and os.remove(tmp))
        torch.save({'state_dict': sd, 'meta': meta}, tmp)
    from mmengine.logging import print_log
    print_log(f'{path}: weights read from ' + (f"its '{key}' entry" if key else 'a bare state '
              'dict') + f' (mmengine reads only \'state_dict\'): loading them from {tmp}',
              logger='current', level=20)
    return tmp


def state_dict_mismatch(model, state_dict: dict):
    """``(missing, unexpected, other_shape)`` key lists between a model and a state dict."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [k for k in own if k in state_dict and hasattr(state_dict[k], 'shape')
             and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shape


def describe_mismatch(missing, unexpected, shape) -> str:
    """``3 missing (e.g. backbone.x), 1 unexpected (e.g. y)`` for the non-empty lists."""
    parts = []
    for keys, what in ((missing, 'missing'), (unexpected, 'unexpected'),
                       (shape, 'of another shape')):
        if keys:
            parts.append(f'{len(keys)} keys {what} (e.g. {keys[0]})')
    return ', '.join(parts)
