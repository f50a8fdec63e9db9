from . import backbones, layers, losses  # noqa: F401  (registers modules)
from .backbones import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from . import segmentors  # noqa: F401
from . import classifiers  # noqa: F401
