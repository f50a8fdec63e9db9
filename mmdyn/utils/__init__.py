from .checkpoint import (allow_mmengine_checkpoints, mmengine_checkpoint_safe_globals,
                         read_checkpoint)
from .errors import UnreadableCheckpoint, UserError

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_safe_globals', 'read_checkpoint',
           'UnreadableCheckpoint', 'UserError']
