"""configs/dvt: recipe facts as loaded, and every config built and run (tiny widths)."""
import copy
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.structures import DataSample

import mmdyn  # noqa: F401
from mmdyn.models.utils.records import attach_dynamic_records

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DVT = osp.join(REPO, 'configs', 'dvt')
IN1K = ['dvt_deit-s_8xb128_in1k.py', 'dvt-2exit_deit-s_8xb128_in1k.py',
        'dvt-noreuse_deit-s_8xb128_in1k.py', 'dvt-freuse_deit-s_8xb128_in1k.py',
        'dvt-rreuse_deit-s_8xb128_in1k.py']
CIFAR = ['dvt_deit-s_8xb16-50e_cifar10-224.py', 'dvt_deit-s_8xb16-50e_cifar100-224.py']
ALL = IN1K + CIFAR
TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=1)


@functools.lru_cache(maxsize=None)
def _load(name):
    return Config.fromfile(osp.join(DVT, name))


def load(name):
    return copy.deepcopy(_load(name))


def test_all_listed():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(DVT, '*.py')))
    assert found == sorted(ALL)
    readme = open(osp.join(DVT, 'README.md')).read()
    for name in found:
        assert name in readme


@pytest.mark.parametrize('name', ALL)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.find_unused_parameters is True
    assert dict(type='mmdyn.DynamicStatsHook') in cfg.custom_hooks
    assert any(e['type'] == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    assert cfg.model.type == 'mmdyn.DVTClassifier' and cfg.model.arch == 'deit-s'
    assert cfg.model.thresholds_file.endswith(name[:-3] + '/thresholds.json')
    assert cfg.default_scope == 'mmpretrain'


def test_imagenet_recipe():
    cfg = load('dvt_deit-s_8xb128_in1k.py')
    m = cfg.model
    assert m.exits == [7, 10, 14] and m.patch_size == 16
    assert m.feature_reuse and m.relation_reuse
    assert m.backbone_cfg.drop_path_rate == 0.1
    assert m.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert [a['type'] for a in m.train_cfg.augments] == ['Mixup', 'CutMix']
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == 20
    assert cos.type == 'CosineAnnealingLR' and cos.eta_min == 1e-5
    ema = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert ema and ema[0]['momentum'] == pytest.approx(1 - 0.99996)
    assert load('dvt-2exit_deit-s_8xb128_in1k.py').model.exits == [7, 14]
    for name, f, r in (('dvt-noreuse', False, False), ('dvt-freuse', True, False),
                       ('dvt-rreuse', False, True)):
        m = load(f'{name}_deit-s_8xb128_in1k.py').model
        assert (m.feature_reuse, m.relation_reuse) == (f, r)


@pytest.mark.parametrize('name', CIFAR)
def test_cifar_recipe(name):
    cfg = load(name)
    n = 10 if 'cifar10-' in name else 100
    assert cfg.model.num_classes == n == cfg.model.data_preprocessor.num_classes
    assert cfg.train_dataloader.dataset.type == f'CIFAR{n}'
    # fine-tuning at 224 so the exits see the ImageNet token grids
    assert cfg.train_dataloader.dataset.pipeline[0] == dict(type='Resize', scale=224,
                                                            interpolation='bicubic')
    assert cfg.val_dataloader.dataset.pipeline[0]['scale'] == 224
    assert cfg.model.init_cfg.type == 'Pretrained'


def tiny_model(name):
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    m = cfg.model
    m.arch = TINY
    m.patch_size = 8
    m.exits = [2, 4] if len(m.exits) == 2 else [2, 3, 4]
    m.thresholds = [0.0] * (len(m.exits) - 1)
    m.thresholds_file = None
    m.pop('init_cfg', None)
    return MODELS.build(m)


@pytest.mark.parametrize('name', ALL)
def test_build_and_run(name):
    model = tiny_model(name)
    cfg = load(name)
    nc = cfg.model.num_classes
    assert model.num_exits == len(cfg.model.exits)
    assert model.feature_reuse == cfg.model.feature_reuse
    assert model.relation_reuse == cfg.model.relation_reuse
    torch.manual_seed(0)
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    # one training step
    model.train()
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    assert set(losses) == {f'loss_exit{k}' for k in range(model.num_exits)}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.exits[-1].head.fc.weight.grad is not None
    # one prediction (thresholds 0: everyone stops at the first exit)
    model.eval()
    attach_dynamic_records(model)
    batch = model.data_preprocessor(data, False)
    with torch.no_grad():
        out = model(**batch, mode='predict')
    assert len(out) == 2 and out[0].pred_score.shape == (nc, )
    assert all(s.exit_index == 0 for s in out)
    assert out[0].metainfo['dynamic_flops'] == model.exit_flops()[0]
