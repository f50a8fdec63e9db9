"""Distributed training: logged losses averaged over the processes; CPU-only machines (gloo)."""
import os
from typing import Dict

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class MMDynDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose logged losses are the mean over the processes.

    mmengine logs what ``train_step`` returns on rank 0 only, i.e. rank 0's losses; DDP averages
    the gradients of every rank, so the loss that matches the update is the mean. ``tools/
    train.py`` uses this wrapper for distributed GPU runs whose config names no other wrapper.
    """

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """One DDP step; the returned (logged) losses are averaged over the processes."""
        return reduce_log_vars(super().train_step(data, optim_wrapper))


@MODEL_WRAPPERS.register_module()
class MMDynCPUDistributedDataParallel(MMDynDistributedDataParallel):
    """:class:`MMDynDistributedDataParallel` for CPU modules.

    CPU modules take no ``device_ids``, and ``SyncBatchNorm`` (which mmseg/mmdet configs use) has
    no CPU kernel, so it is turned back into plain batch norm first.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)


def reduce_log_vars(log_vars: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Average the scalar log variables of a training step over the processes.

    Keys present on every rank are averaged (one ``all_reduce``); a key that only some ranks
    logged in this step keeps its local value. Without an initialised process group, or with
    one process, ``log_vars`` is returned as it is.
    """
    if not torch_dist.is_available() or not torch_dist.is_initialized():
        return log_vars
    world = torch_dist.get_world_size()
    if world == 1 or not log_vars:
        return log_vars
    keys = [k for k, v in log_vars.items()
            if (isinstance(v, torch.Tensor) and v.numel() == 1) or isinstance(v, (int, float))]
    everywhere = [None] * world
    torch_dist.all_gather_object(everywhere, sorted(keys))
    common = sorted(set.intersection(*(set(k) for k in everywhere)))
    if not common:
        return log_vars
    values = torch.stack([torch.as_tensor(log_vars[k]).detach().reshape(()).double()
                          for k in common])
    device = next((v.device for v in log_vars.values() if isinstance(v, torch.Tensor)),
                  values.device)
    if torch_dist.get_backend() == 'nccl':
        values = values.cuda()
    torch_dist.all_reduce(values)
    values = (values / world).to(device)
    out = dict(log_vars)
    for k, v in zip(common, values):
        ref = log_vars[k]
        out[k] = v.to(ref.dtype).reshape(ref.shape) if isinstance(ref, torch.Tensor) else float(v)
    return out


#: the environment each launcher's processes get from their starter (torchrun, srun, mpirun)
LAUNCHER_ENV = dict(pytorch=('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                    slurm=('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
                    mpi=('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK',
                         'OMPI_COMM_WORLD_SIZE'))
LAUNCHER_STARTER = dict(pytorch='torchrun (tools/dist_train.sh, tools/dist_test.sh)',
                        slurm='srun (tools/slurm_train.sh, tools/slurm_test.sh)', mpi='mpirun')


def check_launcher_env(launcher: str, environ=None) -> None:
    """One line (:class:`~mmdyn.utils.cli.ToolError`) when ``--launcher`` names a starter
    that did not start this process (its variables are missing), instead of a ``KeyError``
    deep in the process-group setup."""
    env = os.environ if environ is None else environ
    missing = [k for k in LAUNCHER_ENV.get(launcher, ()) if k not in env]
    if missing:
        from .cli import ToolError
        raise ToolError(f'--launcher {launcher}: {", ".join(missing)} not set; start the '
                        f'tool through {LAUNCHER_STARTER[launcher]}, or use --launcher none')


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Prepare ``cfg`` for a distributed run; return True if it is a CPU-only one.

    With a launcher and CUDA, a config without a ``model_wrapper_cfg`` gets
    :class:`MMDynDistributedDataParallel` (mean logged losses; ``find_unused_parameters`` from
    the config). With the ``pytorch`` launcher (torchrun) and no CUDA device, start the process
    group with the gloo backend ourselves (mmengine's ``init_dist`` would call
    ``torch.cuda.set_device``) and wrap the model with :class:`MMDynCPUDistributedDataParallel`.
    """
    if launcher == 'none':
        return False
    if torch.cuda.is_available():
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(
                type='MMDynDistributedDataParallel', broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters', False))
        return False
    if launcher != 'pytorch':
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


def close_distributed() -> None:
    """After a successful run: wait for every rank, collect garbage, destroy the process group.

    The caller drops its runner first. Runners sit in reference cycles (each loop holds its
    runner), so without a collection the DDP wrapper, its reducer and through them the gloo
    process group live until interpreter shutdown; there a gloo worker thread that releases a
    tensor tries to take the GIL, is ended by Python and aborts the process ("terminate called
    without an active exception", exit -6, seen once in about 50 CPU runs). Collected here, the
    group's last reference goes with ``destroy_process_group`` while Python is fully alive.
    Nothing happens when no group was initialised (single-process runs)."""
    import gc

    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        gc.collect()
        torch_dist.destroy_process_group()
        gc.collect()
