"""Distributed training on machines without a GPU (gloo backend)."""
import os

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class MMDynCPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules.

    CPU modules take no ``device_ids``, and ``SyncBatchNorm`` (which mmseg/mmdet configs use) has
    no CPU kernel, so it is turned back into plain batch norm first.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Prepare ``cfg`` for a distributed run without a GPU; return True if it did.

    With the ``pytorch`` launcher (torchrun) and no CUDA device, start the process group with
    the gloo backend ourselves (mmengine's ``init_dist`` would call ``torch.cuda.set_device``) and
    wrap the model with :class:`MMDynCPUDistributedDataParallel`.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return False
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                      world_size=int(os.environ['WORLD_SIZE']))
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDynCPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    return True
