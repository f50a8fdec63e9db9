"""configs/msvit: the recipes as loaded, and every config built and run (tiny widths)."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData

from mmdyn.analysis.complexity import generated_batch
from mmdyn.models.utils.records import attach_dynamic_records

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', 'msvit')
ALL = sorted(osp.basename(p) for p in glob.glob(osp.join(CFG_DIR, '*.py')))
MAIN = 'msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
CLS_DYN = [n for n in ALL if n.startswith(('msvit', 'msdeit'))]
CLS_STATIC = [n for n in ALL if n.startswith('vit-s')]
SEG = [n for n in ALL if n.startswith('segmenter')]
TRAIN_STEP = [MAIN, 'msvit-s-p16-32_l0-g0.5-w4_1xb512-20e_in1k.py',
              'msvit-s-p16-32_bas-g0.5-w4_1xb512-20e_in1k.py',
              'msvit-s-p16-32_gbas-g0.5-w4_1xb512-20e_in1k.py',
              'msvit-t-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py',
              'msdeit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py',
              'vit-s-p16_1xb512-20e_in1k-128px.py', 'vit-s-p16_1xb512-20e_in1k-224px.py']
TINY = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)


_CACHE = {}


def load(name):
    if name not in _CACHE:  # parsing the codebases' bases is the slow part: once per config
        _CACHE[name] = Config.fromfile(osp.join(CFG_DIR, name))
    return copy.deepcopy(_CACHE[name])


def build(cfg):
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def test_all_configs_listed_and_counted():
    assert len(CLS_DYN) == 9 + 3 + 3 + 3 and len(CLS_STATIC) == 4 and len(SEG) == 6
    assert len(ALL) == len(CLS_DYN) + len(CLS_STATIC) + len(SEG)
    readme = open(osp.join(CFG_DIR, 'README.md')).read()
    for name in ALL:
        assert name in readme, name


@pytest.mark.parametrize('name', ALL)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    bb = cfg.model.backbone
    if name in CLS_STATIC:
        assert bb.type == 'mmdyn.ViT'
        return
    assert bb.type == 'mmdyn.MSViT'
    assert (bb.patch_size, bb.coarse_size) == (16, 32)
    assert cfg.find_unused_parameters is True
    assert any(h.type == 'mmdyn.DynamicStatsHook' for h in cfg.custom_hooks)
    assert any(e.type == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    assert 'depth' not in bb and 'num_layers' not in bb  # nothing left of mmseg's ViT


@pytest.mark.parametrize('name', CLS_DYN)
def test_imagenet_recipe(name):
    cfg = load(name)
    bb = cfg.model.backbone
    g, lam = name.split('-g')[1].split('_')[0].split('-w')
    assert bb.target == float(g) and bb.loss_weight == float(lam)
    assert bb.gate_cfg == dict(hidden_dims=104, num_layers=4, tau=0.3, threshold=0.5,
                               init_fine_prob=0.99)
    assert bb.adaptive_trimming and bb.out_type == 'cls_token'
    kind = name.split('_')[1].split('-g')[0]
    assert bb.gate_loss.type == kind.split('-')[0]
    if bb.gate_loss.type == 'gbas':
        assert bb.gate_loss.center_init == kind.endswith('ctr')
        assert bb.gate_loss.hyperprior_std == 0.1 and bb.gate_loss.temperature == 0.3
        assert 'hyperprior_variance' not in bb.gate_loss
    assert cfg.train_cfg.max_epochs == 20 and cfg.train_dataloader.batch_size == 512
    opt = cfg.optim_wrapper.optimizer
    if name.startswith('msdeit'):
        assert bb.arch == 'deit-s'
        assert (opt.type, opt.lr) == ('AdamW', 2e-5) and 'clip_grad' not in cfg.optim_wrapper
        assert cfg.model.head.loss.label_smooth_val == 0.1
    else:
        assert bb.arch == ('vit-t' if name.startswith('msvit-t') else 'vit-s')
        assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', 0.03, 0.9, 0.0)
        assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.end, cos.type, cos.begin, cos.end) == \
        ('LinearLR', 0.5, 'CosineAnnealingLR', 0.5, 20)
    (sched, ) = [h for h in cfg.custom_hooks if h.type == 'mmdyn.DynamicScheduleHook']
    (s, ) = sched.schedules
    assert s.path == 'backbone.gate_grad_mult' and s.warmup == 6 * 2503
    assert s.warmup_value == 0.0 and s.value == 1.0
    from mmdyn.engine.hooks.schedule_hook import DynamicScheduleHook
    (sch, ) = DynamicScheduleHook(schedules=sched.schedules).schedules
    assert [sch.value(t) for t in (0, 3 * 2503, 6 * 2503, 10 ** 6)] == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize('name', SEG)
def test_segmenter_recipe(name):
    cfg = load(name)
    bb = cfg.model.backbone
    arch = name.split('msvit-')[1][0]
    g = name.split('-g')[1].split('_')[0]
    assert cfg.default_scope == 'mmseg'
    assert bb.arch == f'vit-{arch}' and bb.freeze_gate and bb.gate_loss is None
    assert bb.target == float(g)
    assert bb.gate_checkpoint == \
        f'work_dirs/msvit-{arch}-p16-32_gbas-ctr-g{g}-w4_1xb512-20e_in1k/epoch_20.pth'
    assert osp.exists(osp.join(CFG_DIR, osp.basename(osp.dirname(bb.gate_checkpoint)) + '.py'))
    assert cfg.model.pretrained is None and bb.init_cfg.type == 'Pretrained'
    dims = 384 if arch == 's' else 192
    assert cfg.model.decode_head.type == 'SegmenterMaskTransformerHead'
    assert cfg.model.decode_head.in_channels == dims and cfg.model.decode_head.num_layers == 2
    assert cfg.crop_size == (512, 512) and cfg.train_cfg.max_iters == 160000
    assert cfg.optim_wrapper.optimizer.lr == 0.001
    assert cfg.model.test_cfg.mode == 'slide'


@pytest.mark.parametrize('name', CLS_STATIC)
def test_static_baselines(name):
    cfg = load(name)
    size = int(name.split('-')[-1][:-len('px.py')])
    assert cfg.model.backbone.img_size == size and cfg.model.backbone.arch == 'vit-s'
    assert cfg.train_pipeline[1].scale == size and cfg.test_pipeline[2].crop_size == size
    assert cfg.val_dataloader.dataset.pipeline[2].crop_size == size
    assert cfg.optim_wrapper.optimizer.lr == 0.03


# ----------------------------------------------------------------------------- build + run
def _tiny_cls(cfg):
    cfg.model.backbone.arch = TINY
    if cfg.model.backbone.type == 'mmdyn.MSViT':
        cfg.model.backbone.gate_cfg.hidden_dims = 8
    cfg.model.head.in_channels = 32
    return build(cfg)


@pytest.mark.parametrize('name', CLS_DYN + CLS_STATIC)
def test_imagenet_build_forward_train_step(name):
    cfg = load(name)
    model = _tiny_cls(cfg)
    attach_dynamic_records(model)
    inputs, samples = generated_batch(model, (64, 64), batch_size=2)
    for i, s in enumerate(samples):
        s.set_gt_label(i)
    # one train step for every recipe; the g*/lambda variants of a recipe (same model, other
    # scalars) run the forward only
    if name in TRAIN_STEP:
        model.train()
        losses = model(inputs, samples, mode='loss')
        total = sum(v for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total)
        total.backward()
        if name in CLS_STATIC:
            assert set(losses) == {'loss'}
        else:
            assert set(losses) == {'loss', model.backbone.gate_loss.loss_name}
            assert model.backbone.tokenizer.fc_in.weight.grad is not None
    if name in CLS_STATIC:
        return
    model.eval()
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert preds[0].pred_score.shape == (1000, )
    assert 0 < preds[0].metainfo['dynamic_flops']
    assert preds[0].metainfo['dynamic_stats']['fine_ratio'] == 1.0  # the gate starts fine


@pytest.mark.parametrize('name', SEG)
def test_segmenter_build_forward_train_step(name):
    cfg = load(name)
    cfg.model.backbone.arch = TINY
    cfg.model.backbone.gate_cfg = dict(hidden_dims=8)
    for k in ('in_channels', 'channels', 'embed_dims'):
        cfg.model.decode_head[k] = 32
    cfg.model.decode_head.num_heads = 2
    cfg.model.decode_head.num_layers = 1
    model = build(cfg)
    attach_dynamic_records(model)
    bb = model.backbone
    assert type(bb).__name__ == 'MSViT' and bb.freeze_gate
    inputs, samples = generated_batch(model, (64, 96), batch_size=2)
    with torch.no_grad():  # a gate that keeps about half the regions fine, on any draw
        last = bb.tokenizer.gate.proj[-1]
        last.weight.normal_(0, 3.)
        last.bias.zero_()
        last.bias.fill_(-bb.tokenizer.logits(bb._prepare(inputs)).median())
    for s in samples:
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 96)))
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert not any('gate' in k for k in losses)  # frozen gate: no gate loss
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is None for p in bb.tokenizer.parameters())
    assert bb.blocks[0].attn.q.weight.grad is not None
    model.eval()
    with torch.no_grad():
        feats = bb(inputs)
        logits = model(inputs, samples, mode='tensor')
    assert feats[0].shape == (2, 32, 4, 6)  # the fine grid
    assert logits.shape == (2, 150, 4, 6)
    fr = bb.last_stats['fine_ratio']
    assert 0 < fr.mean() < 1  # a mixed-scale batch went through
