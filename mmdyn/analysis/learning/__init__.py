"""Learning checks: does a method's gate learn where to spend compute, and does that buy
accuracy per FLOP? One module per method (``run(seed, ...)`` and ``CLAIMS``), shared by
``tools/analysis_tools/learning_check.py`` and the tests."""
import importlib

METHODS = ('dge', 'dit', 'dovit', 'dvt', 'msvit')


def get_protocol(method: str):
    """The protocol module of ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f'no learning check for {method!r}; choose one of {", ".join(METHODS)}')
    return importlib.import_module(f'{__name__}.{method}')
