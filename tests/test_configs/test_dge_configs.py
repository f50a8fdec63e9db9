"""configs/dge: every config loads with the paper's recipe, builds (tiny widths) and runs a
forward and a training step; the DGE ones add the budget loss to the loss dict."""
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
DGE_DIR = osp.join(REPO, 'configs', 'dge')

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)


def all_configs():
    return sorted(osp.basename(p) for p in glob.glob(osp.join(DGE_DIR, '*.py')))


def load(name):
    return Config.fromfile(osp.join(DGE_DIR, name))


def build(cfg, tiny=True):
    if tiny:
        bb = cfg.model.backbone
        vit = 'ViT' in bb.type
        bb.arch = dict(TINY_VIT) if vit else dict(TINY_PVT)
        bb.init_cfg = None
        if cfg.model.get('neck') and 'in_channels' in cfg.model.neck:
            cfg.model.neck.in_channels = [16, 16, 32, 32]
        if cfg.model.get('head'):
            cfg.model.head.in_channels = 32
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if tiny:
        model.init_weights()
    return model


def expected(name):
    """What a config's name promises."""
    arch = {'pvt-t': 'tiny', 'pvt-s': 'small', 'pvt-m': 'medium', 'pvt-l': 'large',
            'deit-s': 'deit-s'}
    out = dict(arch=[v for k, v in arch.items() if k in name][0], dge='dge' in name,
               budget=0.5, phi=(1, 2, 4), layer_wise='layerwise' in name)
    if 'gamma' in name:
        out['budget'] = float(name.split('gamma')[1].split('_')[0])
    for tag, phi in (('phi01', (0, 1)), ('phi12', (1, 2)), ('phi1248', (1, 2, 4, 8))):
        if tag in name:
            out['phi'] = phi
    return out


def test_every_config_listed_in_readme():
    readme = open(osp.join(DGE_DIR, 'README.md')).read()
    names = all_configs()
    assert len(names) >= 6
    for n in names:
        assert n in readme, n


@pytest.mark.parametrize('name', all_configs())
def test_common_settings(name):
    cfg = load(name)
    exp = expected(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    bb = cfg.model.backbone
    host = 'mmdyn.DGEViT' if 'deit' in name else (
        'mmdyn.DGEDPVT' if 'dpvt' in name else 'mmdyn.DGEPVT')
    if exp['dge']:
        assert bb.type == host and bb.get('dge', True)
        assert tuple(bb.granularities) == exp['phi'] and bb.budget_weight == 1.0
        assert bb.budget == exp['budget']
        assert bb.get('layer_wise', False) == exp['layer_wise']
        assert dict(type='mmdyn.DynamicStatsHook') in cfg.custom_hooks
        assert any(e['type'] == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
        assert cfg.find_unused_parameters is True
    else:  # the static host (DGE hosts with dge=False have exactly the host's parameters)
        if 'dpvt' in name:
            assert bb.type == 'mmdyn.DPVT' and not bb.get('dge', False)
        else:
            assert bb.type in ('mmdyn.PVT', 'mmdyn.ViT') or (bb.type == host and bb.dge is False)
    assert bb.arch == exp['arch']
    if 'in1k' in name:
        assert bb.img_size == 256 if 'deit' in name else bb.pretrain_img_size == 256


def test_ade20k_recipe():
    cfg = load('fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py')
    assert cfg.default_scope == 'mmseg'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr) == ('AdamW', 1e-4)
    (sched, ) = cfg.param_scheduler
    assert (sched.type, sched.power, sched.eta_min, sched.end) == ('PolyLR', 0.9, 0.0, 80000)
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size * 4 == 32
    assert cfg.crop_size == (512, 512)
    resize = [t for t in cfg.train_pipeline if t.type == 'RandomResize'][0]
    assert resize.ratio_range == (0.5, 2.0)


def test_coco_recipe():
    cfg = load('mask-rcnn_dge-pvt-s_fpn_1x_coco.py')
    assert cfg.default_scope == 'mmdet'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr) == ('AdamW', 1e-4)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 90000
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
    assert step.milestones == [60000, 80000] and step.gamma == 0.1
    assert cfg.train_dataloader.batch_size == 2
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert min(resize.scale) == 768


def test_imagenet_recipe():
    cfg = load('dge-pvt-s_4xb256_in1k-256px.py')
    assert cfg.default_scope == 'mmpretrain'
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomResizedCrop']
    assert crop[0].scale == 256
    assert [t for t in cfg.test_dataloader.dataset.pipeline
            if t.type == 'CenterCrop'][0].crop_size == 256
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.lr == pytest.approx(1e-3) and opt.weight_decay == 0.05
    assert cfg.train_cfg.max_epochs == 300


def _train_step_losses(model, inputs, samples):
    model.train()
    attach_dynamic_records(model)
    return model(inputs, samples, mode='loss')


SEG_RUN = ['fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py', 'fpn_dpvt-s_4xb8-80k_ade20k-512x512.py']
DET_RUN = ['mask-rcnn_pvt-s_fpn_1x_coco.py', 'mask-rcnn_dge-pvt-s_fpn_1x_coco.py',
           'mask-rcnn_dge-dpvt-s_fpn_1x_coco.py', 'retinanet_dge-pvt-s_fpn_1x_coco.py',
           'retinanet_dge-dpvt-m_fpn_1x_coco.py']


@pytest.mark.parametrize('name', SEG_RUN)
def test_semantic_fpn_forward_and_step(name):
    cfg = load(name)
    model = build(cfg).eval()
    inputs, samples = generated_batch(model, (64, 96), batch_size=2)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 96)
    if 'dge' not in name:
        return  # the static host trains as configs/baselines' do
    for s in samples:
        from mmengine.structures import PixelData
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 96)))
    losses = _train_step_losses(model, inputs, samples)
    assert torch.isfinite(losses['decode.loss_ce'])
    if 'dge' in name:
        assert 'loss_budget' in losses and losses['loss_budget'].requires_grad
        total = sum(v for k, v in losses.items() if k.startswith('loss') or 'loss' in k)
        total.backward()
        gate = model.backbone.dge[0][0].gate.proj.weight
        assert gate.grad is not None and gate.grad.abs().sum() > 0


@pytest.mark.parametrize('name', DET_RUN)
def test_detector_forward_and_step(name):
    cfg = load(name)
    model = build(cfg).eval()
    inputs, samples = generated_batch(model, (64, 64), batch_size=1)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert preds[0].pred_instances.bboxes.shape[-1] == 4
    if 'dge' not in name:
        return
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = default_data_samples(model, 1, (64, 64))
    gt = InstanceData()
    gt.bboxes = torch.tensor([[8., 8., 40., 48.]])
    gt.labels = torch.tensor([3])
    m = torch.zeros(1, 64, 64, dtype=torch.uint8)
    m[0, 8:48, 8:40] = 1
    if 'mask-rcnn' in name:
        gt.masks = BitmapMasks(m.numpy(), 64, 64)
    samples[0].gt_instances = gt
    losses = _train_step_losses(model, inputs, samples)
    assert all(torch.isfinite(v).all() for v in losses['loss_cls']) \
        if isinstance(losses['loss_cls'], list) else torch.isfinite(losses['loss_cls'])
    assert 'loss_budget' in losses


IN1K_RUN = ['pvt-s_4xb256_in1k-256px.py', 'dge-pvt-s_4xb256_in1k-256px.py',
            'dge-deit-s_4xb256_in1k-256px.py', 'dge-dpvt-s_4xb256_in1k-256px.py']


@pytest.mark.parametrize('name', ['deit-s_4xb256_in1k-256px.py',
                                  'dge-deit-s_4xb256_in1k-256px.py'])
def test_deit_stochastic_depth_is_the_authors(name):
    """vtpack's DeiT trainer (its main.py default, not overridden by configs/dge/*.sh) trains
    DGE-DeiT-S and its static DeiT-S with drop path 0.1; mmpretrain's DeiT-S recipe, which
    these configs otherwise follow, sets 0."""
    assert load(name).model.backbone.drop_path_rate == 0.1
    assert load('../baselines/deit-small_4xb256_in1k.py').model.backbone.drop_path_rate == 0.0


@pytest.mark.parametrize('name, warmup', [
    ('deit-s_4xb256_in1k-256px.py', 5), ('pvt-s_4xb256_in1k-256px.py', 5),
    ('pvt-m_4xb256_in1k-256px.py', 5), ('dpvt-s_4xb256_in1k-256px.py', 20),
    ('dpvt-m_4xb256_in1k-256px.py', 20), ('dge-deit-s_4xb256_in1k-256px.py', 20),
    ('dge-pvt-s_4xb256_in1k-256px.py', 20), ('dge-pvt-t_4xb256_in1k-256px.py', 20),
    ('dge-dpvt-s_4xb256_in1k-256px.py', 20)])
def test_imagenet_trainer_is_vtpacks(name, warmup):
    """vtpack's main.py and configs/{dge,standard}/*.sh: no gradient clipping, repeated
    augmentation (3 repeats), 20 warm-up epochs for the DGE and DPVT scripts and its default 5
    for the static DeiT / PVT ones, a cosine from there to 1e-5."""
    cfg = load(name)
    assert cfg.optim_wrapper.get('clip_grad') is None
    sampler = cfg.train_dataloader.sampler
    assert sampler.type == 'RepeatAugSampler' and sampler.num_repeats == 3 and sampler.shuffle
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == warmup and warm.start_factor == 1e-3
    assert cos.type == 'CosineAnnealingLR' and cos.begin == warmup and cos.eta_min == 1e-5


@pytest.mark.parametrize('name', ['dge-pvt-s_4xb256_in1k-256px.py',
                                  'dge-dpvt-s_4xb256_in1k-256px.py',
                                  'dge-deit-s_4xb256_in1k-256px.py'])
def test_imagenet_weight_decay_is_vtpacks(name):
    """Weight decay of every parameter as vtpack's optimizer gives it (timm: none on 1-D
    tensors and on the model's no_weight_decay names: PVT ``cls_token``, DPVT none, DeiT
    ``cls_token`` and ``pos_embed``): position embeddings decay in the PVT / DPVT families."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(name)
    model = build(cfg)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    decay = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    vit = 'deit' in name
    exempt = ('backbone.cls_token', 'backbone.pos_embed') if vit else ('backbone.cls_token', )
    seen = 0
    for n, p in model.named_parameters():
        want = 0.0 if p.ndim == 1 or n.endswith('.bias') or n in exempt else 0.05
        assert decay[id(p)] == pytest.approx(want), n
        seen += 'pos_embed' in n and want > 0
    assert seen >= (0 if vit else 4)


@pytest.mark.parametrize('name', IN1K_RUN)
def test_imagenet_forward_and_step(name):
    cfg = load(name)
    model = build(cfg).eval()
    inputs, samples = generated_batch(model, (64, 64), batch_size=2)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert preds[0].pred_score.shape == (1000, )
    for s in samples:
        s.set_gt_label(3)
    cfg_aug = model.data_preprocessor  # batch augments run in the preprocessor in training
    data = cfg_aug(dict(inputs=list((inputs * 0 + 100).to(torch.uint8)), data_samples=samples),
                   training=True)
    losses = _train_step_losses(model, data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['loss'])
    assert ('loss_budget' in losses) == ('dge' in name)


def test_full_size_pvt_s_build():
    """The real PVT-S + DGE builds (meta device) with 16 gates of width C -> 3."""
    cfg = load('fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py')
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        model = build(cfg, tiny=False)
    bb = model.backbone
    assert bb.depths == [3, 4, 6, 3] and len(bb.dge_layers()) == 16
    assert bb.static_flops((512, 2048)) / 1e9 == pytest.approx(138.8, abs=0.1)


RETINANET = [f'retinanet_{dge}{host}-{size}_fpn_1x_coco.py' for dge in ('', 'dge-')
             for host in ('pvt', 'dpvt') for size in ('s', 'm')]


def _readme_row(name):
    for line in open(osp.join(DGE_DIR, 'README.md')):
        if line.startswith(f'| `{name}` |'):
            return [c.strip() for c in line.strip().strip('|').split('|')]
    raise AssertionError(f'{name} not in the README table')


@pytest.mark.parametrize('name', RETINANET)
def test_retinanet_full_size_matches_readme(name):
    """The RetinaNet 1x configs (PVT-S/M, DPVT-S/M, +-DGE) build at full size (meta device)
    and have the parameters, gates and static FLOPs the README lists."""
    assert name in all_configs()
    cfg = load(name)
    assert cfg.model.type == 'RetinaNet' and cfg.train_cfg.max_iters == 90000
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        model = build(cfg, tiny=False)
    bb = model.backbone
    row = _readme_row(name)
    params = sum(p.numel() for p in model.parameters())
    gates = sum(p.numel() for k, p in bb.named_parameters() if '.gate.' in k)
    assert params / 1e6 == pytest.approx(float(row[1]), abs=0.006)
    assert (row[2] == '-') == (gates == 0)
    if gates:
        assert gates / 1e3 == pytest.approx(float(row[2].split()[0]), abs=0.051)
    assert bb.static_flops((800, 1280)) / 1e9 == pytest.approx(float(row[3]), abs=0.051)
