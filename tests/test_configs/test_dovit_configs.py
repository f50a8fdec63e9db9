"""configs/dovit: the recipes as loaded, every config built and run (tiny widths), and one DoViT
config trained end to end by the mmengine Runner with its hooks (schedule, distillation from a
frozen static teacher written to a checkpoint, statistics) on a generated ADE20K-layout set."""
import copy
import functools
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData

from mmdyn.analysis.complexity import generated_batch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIR = osp.join(REPO, 'configs', 'dovit')

# DoViT config -> (static baseline, xi, arch, classes, decision layers)
CS = '8xb1-80k_cityscapes-768x768.py'
CS2 = '8xb2-80k_cityscapes-768x768.py'  # the static teachers the authors train at 2 per GPU
L_ARCH = dict(embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4)
ADE_SETR_XI = (0.96, 0.955, 0.95)  # the authors' ADE20K SETR-S/B configs
DOVIT = {
    'setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py':
    ('setr_vit-b_naive_8xb2-160k_ade20k-512x512.py', ADE_SETR_XI, 'vit-b', 150, (2, 5, 8)),
    'segmenter_dovit-s_mask_8xb1-160k_ade20k-512x512.py':
    ('segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py', 0.96, 'vit-s', 150, (2, 5, 8)),
    'setr_dovit-s_naive_8xb2-160k_ade20k-512x512.py':
    ('setr_vit-s_naive_8xb2-160k_ade20k-512x512.py', ADE_SETR_XI, 'vit-s', 150, (2, 5, 8)),
    'setr_dodeit-b_naive_8xb2-160k_ade20k-512x512.py':
    ('setr_deit-b_naive_8xb2-160k_ade20k-512x512.py', 0.96, 'deit-b', 150, (2, 5, 8)),
    'setr_dovit-b_naive_' + CS: ('setr_vit-b_naive_' + CS, 0.985, 'vit-b', 19, (2, 5, 8)),
    'setr_dovit-s_naive_' + CS: ('setr_vit-s_naive_' + CS2, 0.985, 'vit-s', 19, (2, 5, 8)),
    'setr_dodeit-b_naive_' + CS: ('setr_deit-b_naive_' + CS, 0.985, 'deit-b', 19, (2, 5, 8)),
    'setr_dovit-l_naive_' + CS: ('setr_vit-l_naive_' + CS, 0.985, L_ARCH, 19, (6, 12, 18)),
    'segmenter_dovit-b_mask_' + CS: ('segmenter_vit-b_mask_' + CS2, 0.985, 'vit-b', 19,
                                     (2, 5, 8)),
    'setr_dodeit-s_naive_' + CS: ('setr_deit-s_naive_' + CS, 0.985, 'deit-s', 19, (2, 5, 8)),
    'segmenter_dovit-s_mask_' + CS: ('segmenter_vit-s_mask_' + CS2, 0.985, 'vit-s', 19,
                                     (2, 5, 8)),
    'segmenter_dovit-l_mask_' + CS: ('segmenter_vit-l_mask_' + CS2, 0.985, L_ARCH, 19,
                                     (6, 12, 18)),
}
# What the authors' configs (FLHonker/DoViT-code, local_configs/) set, config by config:
# final_norm, the position-embedding resize mode (mmseg's SETR base: bilinear, Segmenter base:
# bicubic) and diff_conf (None: not set; their Segmenter-S Cityscapes 0.0 stops nothing either).
# The DeiT hosts have no config of theirs and follow the ViT ones.
OFFICIAL = {
    'setr_dovit-b_naive_8xb2-160k_ade20k-512x512.py': (False, 'bilinear', None),
    'setr_dovit-s_naive_8xb2-160k_ade20k-512x512.py': (False, 'bilinear', 0.02),
    'setr_dodeit-b_naive_8xb2-160k_ade20k-512x512.py': (False, 'bilinear', None),
    'segmenter_dovit-s_mask_8xb1-160k_ade20k-512x512.py': (True, 'bicubic', 0.02),
    'setr_dovit-b_naive_' + CS: (True, 'bilinear', None),
    'setr_dovit-s_naive_' + CS: (True, 'bilinear', None),
    'setr_dovit-l_naive_' + CS: (True, 'bilinear', None),
    'setr_dodeit-b_naive_' + CS: (True, 'bilinear', None),
    'setr_dodeit-s_naive_' + CS: (True, 'bilinear', None),
    'segmenter_dovit-b_mask_' + CS: (True, 'bicubic', None),
    'segmenter_dovit-s_mask_' + CS: (True, 'bicubic', None),
    'segmenter_dovit-l_mask_' + CS: (True, 'bicubic', None),
}
# threshold sweep: name -> (parent, xi)
XI = {
    f'setr_dovit-{a}_naive_8xb2-160k_ade20k-512x512_xi{xi}.py':
    (f'setr_dovit-{a}_naive_8xb2-160k_ade20k-512x512.py', xi)
    for xi in (0.985, 0.98, 0.96) for a in ('b', 's')
}
ABLATIONS = {
    'setr_dovit-b_naive_' + CS[:-3] + '_no-merge.py': ('setr_dovit-b_naive_' + CS, False, True),
    'setr_dovit-b_naive_' + CS[:-3] + '_no-distill.py': ('setr_dovit-b_naive_' + CS, True,
                                                          False),
}
STATIC = sorted({v[0] for v in DOVIT.values()})
# benchmark-only configs: name -> (parent, forced keep ratios)
BENCH = {'setr_dovit-b_naive_' + CS[:-3] + '_keep0.5.py': ('setr_dovit-b_naive_' + CS,
                                                         (0.5, 0.5, 0.5))}
ALL = sorted(DOVIT) + sorted(XI) + sorted(ABLATIONS) + STATIC + sorted(BENCH)
TINY = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2)
S = 64


@functools.lru_cache(maxsize=None)
def _load(name):
    return Config.fromfile(osp.join(DIR, name))


def load(name):
    return copy.deepcopy(_load(name))


def tiny(cfg):
    """Tiny widths, no pretrained download, 64x64 inputs; the structure is the config's."""
    cfg = copy.deepcopy(cfg)
    m = cfg.model
    m.backbone.arch = TINY
    m.backbone.img_size = (S, S)
    m.backbone.init_cfg = None
    if 'out_indices' in m.backbone and len(m.backbone.out_indices) == 4:
        m.backbone.out_indices = (0, 1, 2, 3)
    else:
        m.backbone.out_indices = (3, )
    if m.backbone.type == 'mmdyn.DoViT':
        m.backbone.decision_layers = (1, 2)
        for key in ('threshold', 'train_threshold'):
            if isinstance(m.backbone.get(key), (list, tuple)):
                m.backbone[key] = m.backbone[key][:2]
        if m.backbone.get('decision_override') is not None:
            m.backbone.decision_override.keep_ratios = \
                m.backbone.decision_override.keep_ratios[:2]
    m.data_preprocessor.size = (S, S)
    dh = m.decode_head
    dh.in_channels = 32
    if dh.type == 'SegmenterMaskTransformerHead':
        dh.update(channels=32, embed_dims=32, num_heads=2, num_layers=1)
    else:
        dh.channels = 16
    for aux in (m.get('auxiliary_head') or []):
        aux.update(in_channels=32, channels=16)
    if m.test_cfg.get('mode') == 'slide':
        m.test_cfg.update(crop_size=(S, S), stride=(48, 48))
    return cfg


def build(cfg):
    init_default_scope(cfg.default_scope)
    # (constructor initialisation: init_weights' per-parameter logging costs seconds here)
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def test_all_listed_in_readme_and_here():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(DIR, '*.py')))
    assert found == sorted(ALL)
    readme = open(osp.join(DIR, 'README.md')).read()
    for name in found:
        assert name in readme


@pytest.mark.parametrize('name', ALL)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'
    bb = cfg.model.backbone
    assert bb.type in ('mmdyn.ViT', 'mmdyn.DoViT') and bb.patch_size == 16
    assert 'num_layers' not in bb and 'embed_dims' not in bb  # nothing left of mmseg's ViT


@pytest.mark.parametrize('name', sorted(n for n in ALL if n.startswith('setr_')))
def test_setr_learning_rates_are_mmsegs_setr(name):
    """SETR on ADE20K and Cityscapes trains at mmseg's SETR rate (0.01; the authors' DoViT
    SETR configs inherit it from the 160k / 80k schedule base), heads at 10x, no weight decay;
    read from mmseg's own SETR configs, not written here."""
    import mmseg
    ref_name = 'setr_vit-l_naive_8xb2-160k_ade20k-512x512.py' if 'ade20k' in name else \
        'setr_vit-l_naive_8xb1-80k_cityscapes-768x768.py'
    ref = Config.fromfile(osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'setr',
                                   ref_name))
    opt = load(name).optim_wrapper
    assert opt.optimizer.lr == ref.optim_wrapper.optimizer.lr == 0.01
    assert opt.optimizer.weight_decay == 0.0
    assert opt.paramwise_cfg.custom_keys['head'].lr_mult == 10.


@pytest.mark.parametrize('name', sorted(n for n in ALL if n.startswith('segmenter_')))
def test_segmenter_input_normalisation(name):
    """Segmenter on ADE20K: Segmenter's mean = std = 127.5 (the authors' ADE20K configs set
    it); on Cityscapes the data's ImageNet mean / std (the authors' Cityscapes configs set none
    and take the dataset base's). References read from mmseg's own configs."""
    import mmseg
    root = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')
    ref = osp.join(root, 'segmenter', 'segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py') \
        if 'ade20k' in name else osp.join(root, 'fcn', 'fcn_r50-d8_4xb2-80k_cityscapes-769x769.py')
    want = Config.fromfile(ref).model.data_preprocessor
    got = load(name).model.data_preprocessor
    assert (got.mean, got.std) == (want.mean, want.std)
    assert got.mean[0] == (127.5 if 'ade20k' in name else 123.675)


@pytest.mark.parametrize('name', sorted(DOVIT))
def test_dovit_recipe(name):
    static_name, xi, arch, classes, layers = DOVIT[name]
    cfg, static = load(name), load(static_name)
    m, s = cfg.model, static.model
    assert m.type == 'mmdyn.DoViTEncoderDecoder' and s.type == 'EncoderDecoder'
    assert m.backbone.type == 'mmdyn.DoViT' and s.backbone.type == 'mmdyn.ViT'
    assert m.backbone.arch == s.backbone.arch == arch
    thr = m.backbone.threshold
    assert (tuple(thr) if isinstance(thr, (list, tuple)) else thr) == xi
    assert m.backbone.decision_layers == layers
    assert m.backbone.merge_tokens is True and m.backbone.num_classes == classes
    assert m.backbone.agg_rate == 0.1
    assert m.decode_head.num_classes == s.decode_head.num_classes == classes
    # the authors' auxiliary heads (CE weight 0.4 each) and distillation weights
    aux = m.backbone.aux_head
    assert aux.type == ('SETRUPHead' if name.startswith('setr') else 'FCNHead')
    assert aux.channels == 256 and aux.num_convs == 1 and aux.kernel_size == 1
    assert aux.norm_cfg.type == 'SyncBN' and aux.dropout_ratio == 0
    assert aux.get('up_scale', 4) == 4 and aux.get('concat_input', False) is False
    assert aux.loss_decode.loss_weight == 0.4 and 'in_channels' not in aux
    assert m.aux_loss_weight == 1.0 and m.distill_loss.loss_weight == 1.0
    assert m.feat_distill_loss.loss_weight == 0.5
    final_norm, interp, diff = OFFICIAL[name]
    assert m.backbone.final_norm is final_norm and m.backbone.interpolate_mode == interp
    assert m.backbone.get('diff_conf') == diff
    # the student differs from its teacher only in the DoViT parts
    for k in ('decode_head', 'neck', 'data_preprocessor', 'test_cfg'):
        assert m.get(k) == s.get(k)
    for k, v in s.backbone.items():
        if k != 'type':
            assert m.backbone[k] == v
    assert cfg.find_unused_parameters is True
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert 'mmdyn.DynamicStatsHook' in hooks
    sd = hooks['mmdyn.SelfDistillationHook']
    assert osp.samefile(sd.teacher_cfg, osp.join(DIR, static_name))
    assert tuple(sd.teacher_features) == ('backbone', )
    assert static_name[:-3] in sd.teacher_checkpoint
    assert {e.type for e in cfg.val_evaluator} == {'IoUMetric', 'mmdyn.ComplexityMetric'}
    assert cfg.optim_wrapper == static.optim_wrapper
    assert cfg.train_cfg == static.train_cfg
    if name.startswith('segmenter'):
        (sched, ) = hooks['mmdyn.DynamicScheduleHook'].schedules
        assert sched.path == 'backbone.train_threshold'
        warmup = 70000 if 'cityscapes' in name else 140000
        assert (sched.start_value, sched.end_value, sched.end) == (1.0, xi, warmup)
    else:
        assert 'mmdyn.DynamicScheduleHook' not in hooks
    if 'cityscapes' in name:
        assert cfg.crop_size == (768, 768) and cfg.train_cfg.max_iters == 80000
        assert cfg.train_dataloader.batch_size == 1
    else:
        assert cfg.crop_size == (512, 512) and cfg.train_cfg.max_iters == 160000


@pytest.mark.parametrize('name', sorted(XI))
def test_threshold_sweep(name):
    parent, xi = XI[name]
    cfg, p = load(name), load(parent)
    assert cfg.model.backbone.threshold == xi
    assert tuple(p.model.backbone.threshold) == ADE_SETR_XI
    cfg.model.backbone.threshold = p.model.backbone.threshold
    assert cfg.model == p.model and cfg.custom_hooks == p.custom_hooks


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablations(name):
    parent, merge, distill = ABLATIONS[name]
    cfg, p = load(name), load(parent)
    assert cfg.model.backbone.merge_tokens is merge
    types = [h.type for h in cfg.custom_hooks]
    assert ('mmdyn.SelfDistillationHook' in types) is distill
    assert (cfg.model.distill_loss is not None) is distill
    assert cfg.model.backbone.threshold == p.model.backbone.threshold


@pytest.mark.parametrize('name', sorted(DOVIT) + sorted(ABLATIONS) + STATIC)
def test_forward_and_train_step(name):
    """(The threshold-sweep configs equal their forward-tested parents but for xi, see
    test_threshold_sweep.)"""
    cfg = tiny(load(name))
    model = build(cfg).eval()
    if name in DOVIT or name in ABLATIONS:
        assert type(model.backbone).__name__ == 'DoViT'
    inputs, samples = generated_batch(model, (S, S), batch_size=2)
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
    k = cfg.model.decode_head.num_classes
    assert logits.shape[:2] == (2, k)
    if name in DOVIT:  # whole-image/slide prediction of the DoViT segmentors
        with torch.no_grad():
            preds = model(inputs, samples, mode='predict')
        assert preds[0].pred_sem_seg.data.shape == (1, S, S)
    model.train()
    for s in samples:
        s.gt_sem_seg = PixelData(data=torch.randint(0, k, (1, S, S)))
    losses = model.loss(inputs, samples)
    total = sum(v for n, v in losses.items() if 'loss' in n)
    total.backward()
    assert torch.isfinite(total)
    if type(model.backbone).__name__ == 'DoViT':
        assert {'dovit_aux_0.loss_ce', 'dovit_aux_1.loss_ce'} <= set(losses)
        assert model.backbone.aux_heads[0].conv_seg.weight.grad is not None


def test_full_size_static_flops_and_params():
    """The real architectures (meta device): static backbone FLOPs, DoViT's extra parameters."""
    from mmdyn.models.backbones import DoViT
    with torch.device('meta'):
        b = DoViT('vit-b', num_classes=150)
        s = DoViT('vit-s', num_classes=150)
    # ViT-B on 512x512: 1024 patches + cls token
    assert b.host_static_flops((512, 512)) / 1e9 == pytest.approx(107.03, abs=0.01)
    assert s.host_static_flops((512, 512)) / 1e9 == pytest.approx(31.75, abs=0.01)
    # three FCN heads (the default): 1x1 conv 768 -> 256, BN, 1x1 conv 256 -> 150
    assert sum(p.numel() for p in b.aux_heads.parameters()) == 3 * (
        768 * 256 + 2 * 256 + 256 * 150 + 150)


def test_runner_trains_segmenter_dovit_with_its_hooks(tmp_path, toy_ade20k):
    """Two training iterations and a validation through mmengine's Runner: the threshold
    schedule moves backbone.train_threshold, the distillation hook builds the frozen static
    teacher from a config and a checkpoint, the statistics reach the ComplexityMetric."""
    from mmengine.runner import Runner
    name = 'segmenter_dovit-s_mask_8xb1-160k_ade20k-512x512.py'
    cfg = tiny(load(name))
    teacher_cfg = tiny(load(DOVIT[name][0]))
    teacher = build(teacher_cfg)
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    for h in cfg.custom_hooks:
        if h.type == 'mmdyn.SelfDistillationHook':
            h.teacher_cfg = teacher_cfg.model.to_dict()
            h.teacher_checkpoint = ckpt
            h.strict = True
        if h.type == 'mmdyn.DynamicScheduleHook':
            h.schedules[0].end = 2
    pipe_train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomCrop', crop_size=(S, S)),
        dict(type='PackSegInputs')
    ]
    pipe_test = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')
    ]
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(cfg.train_dataloader.dataset, data_root=toy_ade20k, pipeline=pipe_train))
    cfg.val_dataloader = dict(
        batch_size=1, num_workers=0, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(cfg.val_dataloader.dataset, data_root=toy_ade20k, pipeline=pipe_test))
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                       mp_cfg=dict(mp_start_method='fork'))
    cfg.visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
    seen = []
    runner = Runner.from_cfg(cfg)
    model = runner.model
    orig = model.loss

    def spy(inputs, data_samples):
        losses = orig(inputs, data_samples)
        seen.append((model.backbone.train_threshold, set(losses)))
        return losses

    model.loss = spy
    runner.train()
    assert [round(t, 4) for t, _ in seen] == [1.0, round(1.0 - 0.5 * (1 - 0.96), 4)]
    for _, keys in seen:
        assert {'decode.loss_ce', 'dovit_aux_0.loss_ce', 'distill.loss_distill',
                'distill.loss_feat'} <= keys
    assert model.distill_targets is None
    metrics = runner.val_loop.run()
    assert 'complexity/gflops' in metrics and 'mIoU' in metrics
    assert 0 < metrics['complexity/kept_ratio'] <= 1
    # the threshold schedule is in the checkpoint (resumable)
    ck = torch.load(osp.join(cfg.work_dir, 'iter_2.pth'), map_location='cpu',
                    weights_only=False)
    assert 'mmdyn_schedule' in ck


@pytest.mark.parametrize('name', sorted(BENCH))
def test_benchmark_config_forces_the_kept_ratio(name):
    """The benchmark config is its parent with forced decisions: the kept tokens per block, and
    so the FLOPs, follow the requested ratios whatever the (random) weights."""
    parent, ratios = BENCH[name]
    cfg, p = load(name), load(parent)
    assert cfg.model.backbone.pop('decision_override') == dict(keep_ratios=ratios)
    assert cfg.model == p.model and cfg.custom_hooks == p.custom_hooks
    model = build(tiny(load(name))).eval()
    bb = model.backbone
    inputs, samples = generated_batch(model, (S, S), batch_size=2)
    with torch.no_grad():
        model(inputs, samples, mode='tensor')
    # tiny: 4 blocks, decisions after blocks 1 and 2, 16 patch tokens: 8 kept from block 2 on
    counts = [17, 9, 9, 9]
    assert bb.last_block_tokens.tolist() == [counts] * 2
    assert torch.equal(bb.last_stats['kept_ratio_d0'], torch.full((2, ), ratios[0]))
    # two SETR-UP heads: 1x1 conv 32 -> 256 on 16 tokens, 1x1 conv 256 -> 19 on 16 x 16 pixels
    expect = bb.patch_embed.flops((S, S)) + 2 * (16 * 32 * 256 + 256 * 256 * 19) + sum(
        int(bb.blocks[i].flops(n)) for i, n in enumerate(counts))
    assert bb.last_flops.tolist() == [float(expect)] * 2
    assert expect < bb.static_flops((S, S))


@pytest.mark.parametrize('size', ['s', 'l'])
def test_segmenter_cityscapes_heads_follow_mmseg(size):
    """The Segmenter ViT-S / ViT-L mask transformers are mmseg's Segmenter ViT-S / ViT-L heads
    (width, heads, layers), and the hosts match mmseg's backbones."""
    ours = load(f'segmenter_vit-{size}_mask_' + CS2).model
    import mmseg
    ref = Config.fromfile(osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs', 'segmenter',
        f'segmenter_vit-{size}_mask_8xb1-160k_ade20k-512x512.py')).model
    for k in ('in_channels', 'channels', 'embed_dims', 'num_heads', 'num_layers'):
        assert ours.decode_head[k] == ref.decode_head[k], k
    assert ours.decode_head.num_classes == 19
    from mmdyn.models.backbones import DoViT
    arch = DoViT._parse_arch(ours.backbone.arch)
    assert arch['embed_dims'] == ref.backbone.embed_dims
    assert arch['num_heads'] == ref.backbone.num_heads
    assert arch['depth'] == ref.backbone.get('num_layers', 12)
    assert ours.backbone.out_indices == (arch['depth'] - 1, )


# the paper's Table 1 (Cityscapes): parameters of the DoViT segmentors, M
PAPER_PARAMS = {
    'setr_dovit-b_naive_' + CS: 88.23, 'setr_dovit-s_naive_' + CS: 22.89,
    'setr_dovit-l_naive_' + CS: 306.54, 'setr_dodeit-b_naive_' + CS: 88.23,
    'setr_dodeit-s_naive_' + CS: 22.89, 'segmenter_dovit-b_mask_' + CS: 103.99,
    'segmenter_dovit-s_mask_' + CS: 26.79, 'segmenter_dovit-l_mask_' + CS: 334.62,
}


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_params_equal_the_papers_table1(name):
    """With the authors' auxiliary heads the full-size DoViT segmentors have the parameter
    counts the paper prints (backbone on the meta device, heads built)."""
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        bb = MODELS.build(cfg.model.backbone)
    n = sum(p.numel() for p in bb.parameters())
    n += sum(p.numel() for p in MODELS.build(cfg.model.decode_head).parameters())
    assert cfg.model.get('auxiliary_head') is None
    assert round(n / 1e6, 2) == PAPER_PARAMS[name]


# every ADE20K SETR config (static teachers, DoViT students, sweeps): embedding width
ADE_SETR = {n: (384 if '-s_' in n else 768) for n in ALL if n.startswith('setr_')
            and '_ade20k-' in n}


@pytest.mark.parametrize('name', sorted(ADE_SETR))
def test_ade20k_setr_decoder_is_the_authors_naive_head(name):
    """The authors' DoViT ADE20K SETR configs decode with SETR-Naive (mmseg's setr_naive base):
    one SETR-UP stage, LN(E) -> 1x1 conv E->256 (no bias) + BN + ReLU -> x4 -> 1x1 conv 256->150,
    reading the last output; the static teachers' auxiliary heads are the same head at weight
    0.4. Parameter count written out by hand."""
    assert len(ADE_SETR) == 12
    cfg = load(name)
    dh = cfg.model.decode_head
    assert (dh.type, dh.num_convs, dh.kernel_size, dh.up_scale, dh.channels) == (
        'SETRUPHead', 1, 1, 4, 256)
    assert dh.in_index in (3, -1) and len(cfg.model.backbone.out_indices) == 4
    init_default_scope(cfg.default_scope)
    head = revert_sync_batchnorm(MODELS.build(dh))
    e = ADE_SETR[name]
    assert sum(p.numel() for p in head.parameters()) == (
        2 * e + e * 256 + 2 * 256 + 256 * 150 + 150)
    for aux in cfg.model.get('auxiliary_head') or []:
        assert (aux.num_convs, aux.kernel_size, aux.up_scale) == (1, 1, 4)
        assert aux.loss_decode.loss_weight == 0.4


@pytest.mark.parametrize('name', sorted(osp.basename(p) for p in glob.glob(osp.join(DIR, '*.py'))))
def test_name_gives_the_images_per_gpu(name):
    """``8xbN`` in a name is the training batch per GPU (the authors' static Segmenter ViT-S/B/L
    and SETR ViT-S Cityscapes teachers train at 2 per GPU, whatever their names say; every
    DoViT student at the batch of its name)."""
    m = re.search(r'_(\d+)xb(\d+)-', name)
    assert m, name
    assert load(name).train_dataloader.batch_size == int(m.group(2)), name


@pytest.mark.parametrize('size', ['s', 'b', 'l'])
def test_setr_cityscapes_teachers_are_the_authors(size):
    """The authors' SETR Cityscapes teachers: three one-conv auxiliary heads (mmseg 0.x's
    ``setr_naive.py``), the host from mmseg's ViT/16-384 checkpoint."""
    name = f'setr_vit-{size}_naive_' + (CS2 if size == 's' else CS)
    model = load(name).model
    assert len(model.auxiliary_head) == 3
    assert all(h.num_convs == 1 for h in model.auxiliary_head)
    ckpt = model.backbone.init_cfg.checkpoint
    assert ckpt.startswith('https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/'
                           f'segmenter/vit_{dict(s="small", b="base", l="large")[size]}_p16_384')
