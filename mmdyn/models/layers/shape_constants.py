"""Index and geometry tensors that depend only on a map's shape, made once per shape and device.

The dynamic layers need small constant tensors on every forward (the region of every token, the
extents of border regions, token positions, un-pooling tables). Rebuilding them costs a handful
of tiny operations each; summed over the layers of a backbone that is thousands of kernel
launches per image, which on a GPU at small batch costs more than the matrix products the
dynamic model saves. :func:`shape_constant` memoises such a builder: the key is its arguments
(shapes as tuples of ints, devices as strings), the value is made once under
``torch.inference_mode(False)`` and ``torch.no_grad()`` (a normal tensor without grad, usable in
training after a first call under inference mode) and shared by every caller.

The tensors returned are shared: never modify them in place.
"""
import functools
import inspect
import numbers
from collections import OrderedDict

import torch

#: cached constants at most (least recently used dropped first)
MAX_ENTRIES = 512

_STORE: 'OrderedDict[tuple, object]' = OrderedDict()


def _freeze(v):
    t = type(v)
    if t is int or t is str or v is None:  # the common cases first: keys are made per call
        return (t.__name__, v)
    if t is tuple:
        return tuple(_freeze(x) for x in v)
    if isinstance(v, torch.device):
        return ('device', str(v))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, torch.Tensor):
        if v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool:
            v = int(v)  # a size given as a 0-dim integer tensor
        else:
            raise TypeError('shape_constant: tensor arguments cannot be cache keys')
    elif isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = int(v)  # numpy integers: the key of the same Python int
    # the type too: True, 1 and 1.0 are equal keys, but a builder may accept only one of them
    return (type(v).__name__, v)


def device_key(v) -> tuple:
    """The cache key of a device argument (``None``: the default device)."""
    # None is the default device (where a factory function without device= puts a tensor)
    if v is None:
        get_default = getattr(torch, 'get_default_device', None)
        return ('device', str(get_default() if get_default else torch.device('cpu')))
    if isinstance(v, (str, torch.device)):
        return ('device', str(torch.device(v)))
    return _freeze(v)


def _fake_mode_probe():
    """A cheap test for an active fake-tensor mode (about a microsecond: it runs on every cached
    lookup, dozens per forward): the fake mode's dispatch slot and the tracing context, what
    ``torch._guards.detect_fake_mode()`` looks at (without inputs) at several times the cost;
    that function where this torch lacks the slot."""
    key = getattr(getattr(torch._C, '_TorchDispatchModeKey', None), 'FAKE', None)
    get_mode = getattr(torch._C, '_get_dispatch_mode', None)
    try:
        from torch._guards import TracingContext, detect_fake_mode
    except ImportError:  # pragma: no cover
        return lambda: False
    if key is None or get_mode is None:  # pragma: no cover
        return lambda: detect_fake_mode() is not None

    def probe():
        if get_mode(key) is not None:
            return True
        context = TracingContext.try_get()
        return context is not None and context.fake_mode is not None

    return probe


_fake_mode_active = _fake_mode_probe()
_is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', lambda: False)


def _tracing() -> bool:
    """Under ``torch.compile`` / ``torch.export`` tracing or a fake-tensor mode the builders'
    tensors are not real values: nothing is read from or written to the cache then."""
    return _is_compiling() or _fake_mode_active()


def _real(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_real(v) for v in value)
    if isinstance(value, torch.Tensor):
        return not value.is_meta and type(value) in (torch.Tensor, torch.nn.Parameter)
    return True


def constant(key: tuple, make):
    """The cached value of ``key`` (a hashable tuple), made by ``make()`` the first time (made
    anew, not cached, while tracing with fake tensors; a value that is not a real tensor is
    never stored)."""
    if _tracing():
        return make()
    try:
        value = _STORE[key]
    except KeyError:
        with torch.inference_mode(False), torch.no_grad():
            value = make()
        if _real(value):
            _STORE[key] = value
            if len(_STORE) > MAX_ENTRIES:
                _STORE.popitem(last=False)
        return value
    _STORE.move_to_end(key)
    return value


def _binder(sig):
    """``bind(args, kwargs) -> (values but the device, in signature order; device)``: by the
    parameter names for a plain signature (several times faster than ``Signature.bind``, which
    still reports wrong calls), by ``Signature.bind`` otherwise."""
    params = list(sig.parameters.values())
    plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    names = [p.name for p in params]
    defaults = [p.default for p in params]
    slot = names.index('device')

    def bind(args, kwargs):
        if not plain or len(args) > len(names) or any(k not in names[len(args):]
                                                       for k in kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            named = dict(bound.arguments)
            device = named.pop('device')
            return tuple(named.items()), device
        values = list(args) + [kwargs.get(n, d) for n, d in
                               zip(names[len(args):], defaults[len(args):])]
        if any(v is inspect.Parameter.empty for v in values):
            sig.bind(*args, **kwargs)  # raises: a required argument is missing
        device = values.pop(slot)
        return tuple(zip(names[:slot] + names[slot + 1:], values)), device

    return bind


def shape_constant(fn):
    """Memoise ``fn(..., device=None)``, a pure builder of constant tensors from Python
    numbers (shapes, sizes) and a device."""

    sig = inspect.signature(fn)
    if 'device' not in sig.parameters:
        raise TypeError(f'shape_constant: {fn.__qualname__} has no device argument')
    bind = _binder(sig)
    name = (fn.__module__, fn.__qualname__)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        named, device = bind(args, kwargs)
        key = name + (_freeze(named), device_key(device))
        return constant(key, lambda: fn(*args, **kwargs))

    wrapper.uncached = fn
    return wrapper


def clear():
    """Drop every cached constant (tests; freeing device memory)."""
    _STORE.clear()
