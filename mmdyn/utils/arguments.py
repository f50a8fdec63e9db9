"""Misspelt argument and type names: one line naming the class the user configured and the
closest valid name.

A class whose ``__init__`` takes ``**kwargs`` and hands them on to its base (``DGEPVT`` ->
``PVT``) would otherwise let Python report a misspelt argument against the base
(``PVT.__init__() got an unexpected keyword argument``), which is not the class in the config.
:func:`accepted_arguments` follows ``**kwargs`` along the method resolution order;
:func:`check_arguments` makes a class refuse unknown arguments itself, naming itself.
A class lists the arguments it no longer takes in ``REMOVED_ARGUMENTS`` (name -> what to use
instead); those are refused with that advice.
"""
import difflib
import functools
import inspect
from typing import Iterable, Optional, Set

from .errors import UserTypeError, UserValueError

__all__ = ['accepted_arguments', 'check_arguments', 'closest', 'did_you_mean',
           'registry_names', 'unknown_argument_message']


def closest(name: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most like ``name`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(str(name), sorted(set(map(str, choices))), n=1,
                                      cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, else ``''``."""
    best = closest(name, choices)
    return f' (did you mean {best!r}?)' if best else ''


def registry_names(reg) -> Set[str]:
    """The names an mmengine registry resolves: its own and its parents' without a scope
    prefix, and those of the other codebases' registries with theirs (``mmdyn.DiT``)."""
    names: Set[str] = set()
    root = reg
    while reg is not None:
        names.update(reg.module_dict)
        root, reg = reg, reg.parent
    for scope, child in root.children.items():
        names.update(f'{scope}.{n}' for n in child.module_dict)
    return names


def accepted_arguments(cls: type, follow_kwargs: bool = True) -> Optional[Set[str]]:
    """The keyword arguments ``cls(...)`` accepts: the named parameters of its ``__init__`` and,
    while an ``__init__`` takes ``**kwargs``, those of the next ``__init__`` along the method
    resolution order. None when the chain ends in a ``**kwargs`` that goes nowhere known
    (anything may be accepted then), or, with ``follow_kwargs=False``, when the first
    ``__init__`` takes ``**kwargs`` (it may hand them to anything, not only its base)."""
    names: Set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        if klass is object:  # the last **kwargs were not handed to a known __init__
            return None
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in params
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self')
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
        if not follow_kwargs:
            return None
    return None


def unknown_argument_message(owner: str, name: str, valid: Iterable[str]) -> str:
    """``Owner: unexpected argument 'name' (did you mean 'closest'?)``."""
    return f'{owner}: unexpected argument {name!r}{did_you_mean(name, valid)}'


def check_arguments(cls: type) -> type:
    """Make ``cls`` refuse a keyword argument that neither it nor the bases it hands
    ``**kwargs`` to accept, with :func:`unknown_argument_message` naming ``cls`` (a
    :class:`~mmdyn.utils.errors.UserTypeError`; one of ``cls.REMOVED_ARGUMENTS``: a
    :class:`~mmdyn.utils.errors.UserValueError` with its advice). Only the class being built
    checks, so a subclass's own arguments are never refused by its base. Returns ``cls`` (a
    decorator)."""
    init = cls.__dict__.get('__init__')
    if init is None or getattr(init, '_checks_arguments', False):
        return cls

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if type(self) is cls:
            valid = accepted_arguments(cls)
            unknown = [k for k in kwargs if valid is not None and k not in valid]
            removed = getattr(cls, 'REMOVED_ARGUMENTS', {})
            for k in unknown:
                if k in removed:
                    raise UserValueError(f'{cls.__name__}: {k}= was removed; {removed[k]}')
            if unknown:
                raise UserTypeError(unknown_argument_message(cls.__name__, unknown[0], valid))
        init(self, *args, **kwargs)

    __init__._checks_arguments = True
    cls.__init__ = __init__
    return cls
