"""mmdyn.utils.dist.setup_cpu_distributed: which model wrapper a distributed run gets."""
import torch
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from mmdyn.utils.dist import (MMDynCPUDistributedDataParallel, MMDynDistributedDataParallel,
                              setup_cpu_distributed)


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
