from . import transforms  # noqa: F401
from .toy import LAYOUTS, make_toy_dataset

__all__ = ['LAYOUTS', 'make_toy_dataset']
