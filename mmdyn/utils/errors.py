"""Errors that stand for bad user input (a config value, a file, a flag), not for a bug.

mmdyn's tools end with one line naming the problem for any exception that is a
:class:`UserError` (see :func:`mmdyn.utils.cli.friendly_errors`); library code raises subclasses
that also derive from the builtin type a caller would expect (``ValueError``, ...).
"""

__all__ = ['UserError', 'UserValueError', 'UserTypeError', 'UserAttributeError',
           'UnreadableCheckpoint']


class UserError(Exception):
    """Marker base: the message is one line that names the problem."""


class UserValueError(UserError, ValueError):
    """A value out of its range or of the wrong kind."""


class UserTypeError(UserError, TypeError):
    """A value of the wrong type."""


class UserAttributeError(UserError, AttributeError):
    """A name (a dotted path, an attribute) that does not exist."""


class UnreadableCheckpoint(UserError, ValueError):
    """``not a readable checkpoint: FILE (why)``."""
