"""mmdyn.utils.dist: which model wrapper a distributed run gets; closing the group."""
import torch
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from mmdyn.utils.dist import (MMDynCPUDistributedDataParallel, MMDynDistributedDataParallel,
                              close_distributed, setup_cpu_distributed)


def test_gpu_runs_get_the_mean_loss_wrapper(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(find_unused_parameters=True))
    assert setup_cpu_distributed(cfg, 'pytorch') is False  # no gloo set-up on a GPU machine
    assert cfg.model_wrapper_cfg == dict(type='MMDynDistributedDataParallel',
                                         broadcast_buffers=False, find_unused_parameters=True)
    assert 'env_cfg' not in cfg
    # a wrapper named by the config is left alone
    own = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel')))
    setup_cpu_distributed(own, 'slurm')
    assert own.model_wrapper_cfg == dict(type='MMDistributedDataParallel')
    # single-process runs are not wrapped
    single = Config(dict())
    assert setup_cpu_distributed(single, 'none') is False and 'model_wrapper_cfg' not in single


def test_wrappers_registered_and_related():
    assert MODEL_WRAPPERS.get('MMDynDistributedDataParallel') is MMDynDistributedDataParallel
    assert MODEL_WRAPPERS.get('MMDynCPUDistributedDataParallel') is \
        MMDynCPUDistributedDataParallel
    assert issubclass(MMDynCPUDistributedDataParallel, MMDynDistributedDataParallel)
    assert issubclass(MMDynDistributedDataParallel, MMDistributedDataParallel)
    # the CPU wrapper keeps the mean-loss train_step of its parent
    assert MMDynCPUDistributedDataParallel.train_step is MMDynDistributedDataParallel.train_step


def test_close_distributed(tmp_path):
    """``tools/train.py`` and ``tools/test.py`` close the process group after a run: a no-op
    without one, else the group is gone afterwards (a one-process gloo group here)."""
    import torch.distributed as torch_dist
    assert not torch_dist.is_initialized()
    close_distributed()  # nothing to close
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                                  world_size=1)
    try:
        assert torch_dist.is_initialized()
        close_distributed()
        assert not torch_dist.is_initialized()
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_close_distributed_frees_a_wrapper_held_in_a_cycle(tmp_path):
    """A runner is garbage in a reference cycle once the tool drops it; close_distributed
    collects it, so the DDP wrapper (and its hold on the gloo group) is gone before the group
    is destroyed, not left to interpreter shutdown."""
    import gc
    import weakref

    import torch.distributed as torch_dist
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                                  world_size=1)
    try:
        gc.disable()  # no collection of its own between dropping the cycle and closing
        owner = type('Owner', (), {})()
        owner.model = MMDynCPUDistributedDataParallel(torch.nn.Linear(2, 2))
        owner.loop = type('Loop', (), {})()
        owner.loop.runner = owner  # the cycle a runner and its loops make
        wrapper = weakref.ref(owner.model)
        del owner
        assert wrapper() is not None  # only a collection frees it
        close_distributed()
        assert wrapper() is None and not torch_dist.is_initialized()
    finally:
        gc.enable()
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
