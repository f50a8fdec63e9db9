"""mmdyn: dynamic vision transformers for OpenMMLab 2.0.

``import mmdyn`` (or ``custom_imports=dict(imports=['mmdyn'])`` in a config) registers every
mmdyn module in mmdyn's registries (scope ``mmdyn``: ``type='mmdyn.<Name>'`` from mmdet, mmseg
and mmpretrain configs) and lets ``torch.load(weights_only=True)`` read mmengine checkpoints.
"""
from .version import __version__
from .utils.checkpoint import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

from . import registry  # noqa: E402
from . import datasets, engine, evaluation, models, visualization  # noqa: E402,F401
from .utils import dist as _dist  # noqa: E402,F401  (registers the CPU DDP wrapper)

__all__ = ['__version__', 'registry']
