"""configs/dit: the paper's recipes as loaded, and every config built and run (tiny widths)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

from mmdyn.analysis.complexity import default_data_samples, generated_batch
from mmdyn.models.utils.records import attach_dynamic_records

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIT = osp.join(REPO, 'configs', 'dit')

SEG = [f'fpn_dit-{b}_4xb4-40k_ade20k-512x512.py' for b in ('b1', 'b2', 'b3', 'b4')]
DET = ['retinanet_dit-b2_fpn_1x_coco.py', 'mask-rcnn_dit-b2_fpn_1x_coco.py']
CLS = ['dit-b2_8xb128_in1k.py']
ALL = SEG + DET + CLS

TINY = dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load(name):
    return Config.fromfile(osp.join(DIT, name))


def build(cfg, tiny=True):
    if tiny:
        cfg.model.backbone.arch = dict(TINY)
        cfg.model.backbone.init_cfg = None
        if 'neck' in cfg.model and 'in_channels' in cfg.model.neck:
            cfg.model.neck.in_channels = [8, 16, 16, 32]
        if cfg.model.get('head') is not None:
            cfg.model.head.in_channels = 32
    init_default_scope(cfg.default_scope)
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def test_all_listed():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(DIT, '*.py')))
    assert found == sorted(ALL)
    readme = open(osp.join(DIT, 'README.md')).read()
    for name in found:
        assert name in readme


@pytest.mark.parametrize('name', ALL)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.find_unused_parameters is True
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert 'mmdyn.DynamicStatsHook' in hooks and 'mmdyn.GateMomentumHook' in hooks
    assert any(e['type'] == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    bb = cfg.model.backbone
    assert bb.type == 'mmdyn.DiT' and bb.num_stages == 4 and bb.routing == 'dynamic'
    size = name.split('dit-')[1][:2]
    assert bb.arch == size
    mu = {'b1': 2.0 / 2.1, 'b2': 3.8 / 4.0, 'b3': 6.8 / 6.9, 'b4': 9.9 / 10.1}[size]
    assert bb.budget == pytest.approx(mu)
    assert 'depths' not in bb and 'num_layers' not in bb


@pytest.mark.parametrize('name', SEG)
def test_semantic_fpn_recipe(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr) == ('AdamW', 1e-4)
    (sched, ) = cfg.param_scheduler
    assert (sched.type, sched.power, sched.end) == ('PolyLR', 0.9, 40000)
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.train_dataloader.batch_size * 4 == 16
    assert cfg.crop_size == (512, 512)
    size = name.split('dit-')[1][:2]
    assert cfg.model.backbone.init_cfg.checkpoint.endswith(f'pvt_v2_{size}.pth')


@pytest.mark.parametrize('name', DET)
def test_coco_recipe(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr) == ('AdamW', 1e-4)
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]


def test_imagenet_recipe():
    cfg = load(CLS[0])
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[-1].type == 'CosineAnnealingLR'
    assert cfg.model.backbone.out_indices == (3, ) and cfg.model.head.in_channels == 512


def test_semantic_fpn_train_step_and_predict():
    """One training forward with ground truth (the budget loss reaches the loss dict through
    the records hook) and one sparse eval forward with per-image FLOPs in the samples."""
    cfg = load(SEG[1])
    model = build(cfg)
    attach_dynamic_records(model)
    inputs, samples = generated_batch(model, (64, 64), batch_size=2)
    from mmengine.structures import PixelData
    for s in samples:
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert 'loss_budget' in losses and torch.isfinite(losses['loss_budget'])
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    assert model.backbone.row_gates[0][0].proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert preds[0].metainfo['dynamic_flops'] > 0


@pytest.mark.parametrize('name', DET)
def test_detectors_forward(name):
    model = build(load(name)).eval()
    inputs, samples = generated_batch(model, (96, 80), batch_size=1)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    inst = preds[0].pred_instances
    assert inst.bboxes.shape[1] == 4 and len(inst.scores) == len(inst.labels)


def test_mask_rcnn_loss_step():
    model = build(load(DET[1])).train()
    attach_dynamic_records(model)
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = default_data_samples(model, 1, (64, 64))
    gt = InstanceData()
    gt.bboxes = torch.tensor([[8., 8., 40., 48.]])
    gt.labels = torch.tensor([3])
    m = torch.zeros(1, 64, 64, dtype=torch.uint8)
    m[0, 8:48, 8:40] = 1
    gt.masks = BitmapMasks(m.numpy(), 64, 64)
    samples[0].gt_instances = gt
    inputs = generated_batch(model, (64, 64))[0]
    losses = model(inputs, samples, mode='loss')
    for k in ('loss_rpn_cls', 'loss_cls', 'loss_mask', 'loss_budget'):
        v = losses[k]
        v = sum(v) if isinstance(v, (list, tuple)) else v
        assert torch.isfinite(v).all(), k


def test_imagenet_forward_and_loss():
    model = build(load(CLS[0]))
    attach_dynamic_records(model)
    inputs, samples = generated_batch(model, (64, 64), batch_size=2)
    model.eval()
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
    assert logits.shape == (2, 1000)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(7)]
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert 'loss_budget' in losses and torch.isfinite(losses['loss'])


def test_full_size_b2_segmentor_builds():
    """The real DiT-B2 (no overrides) builds on the meta device and feeds the FPN neck."""
    with torch.device('meta'):
        model = build(load(SEG[1]), tiny=False)
    assert model.backbone.depths == [3, 4, 6, 3]
    assert [c.conv.in_channels for c in model.neck.lateral_convs] == [64, 128, 320, 512]
