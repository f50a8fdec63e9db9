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

# tiny models: one thread avoids oversubscribing the shared CPUs (much faster here)
pytestmark = pytest.mark.usefixtures('one_thread')
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DVT = osp.join(REPO, 'configs', 'dvt')
IN1K = ['dvt_deit-s_8xb128_in1k.py', 'dvt-2exit_deit-s_8xb128_in1k.py',
        'dvt-noreuse_deit-s_8xb128_in1k.py', 'dvt-freuse_deit-s_8xb128_in1k.py',
        'dvt-rreuse_deit-s_8xb128_in1k.py', 'dvt-resize_deit-s_8xb128_in1k.py']
CIFAR = ['dvt_deit-s_8xb16-50e_cifar10-224.py', 'dvt_deit-s_8xb16-50e_cifar100-224.py']
T2T = ['dvt_t2t-vit-12_8xb128_in1k.py', 'dvt_t2t-vit-14_8xb64_in1k.py',
       'dvt-2exit_t2t-vit-12_8xb128_in1k.py']
# Table 6 ablations on T2T-ViT-12, the paper's host for that table
T2T_ABL = ['dvt-noreuse_t2t-vit-12_8xb128_in1k.py', 'dvt-freuse_t2t-vit-12_8xb128_in1k.py',
           'dvt-rreuse_t2t-vit-12_8xb128_in1k.py']
# Table 3: the DVT models of Fig. 6 (T2T-ViT-12/14) and the static T2T-ViT-10/12/14/19/24
# fine-tuned on CIFAR at 224 with the public T2T-ViT transfer recipe
T2T_CIFAR = [f'dvt_t2t-vit-{d}_1xb64-60e_cifar{c}-224.py' for d in (12, 14) for c in (10, 100)]
STATIC_CIFAR = [f't2t-vit-{d}_1xb64-60e_cifar{c}-224.py' for d in (10, 12, 14, 19, 24)
                for c in (10, 100)]
STATIC = ['t2t-vit-12_8xb128_in1k.py', 't2t-vit-14_8xb64_in1k.py']
DYN = IN1K + CIFAR + T2T + T2T_ABL + T2T_CIFAR
ALL = DYN + STATIC + STATIC_CIFAR
T2T_EMBED = {7: 256, 10: 256, 12: 256, 14: 384, 19: 448, 24: 512}
# tiny T2T exits at 64 px: first soft splits giving 2x2, 3x3 and 4x4 tokens
T2T_TINY_EXITS = {2: dict(grid=2, soft_split=(14, 8, 3)), 3: dict(grid=3, soft_split=(11, 5, 2)),
                  4: dict(grid=4, soft_split=(7, 4, 2))}
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


@pytest.mark.parametrize('name', DYN)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.find_unused_parameters is True
    assert dict(type='mmdyn.DynamicStatsHook') in cfg.custom_hooks
    assert any(e['type'] == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    assert cfg.model.type == 'mmdyn.DVTClassifier'
    assert cfg.model.arch == ('deit-s' if 't2t' not in name else name.split('_')[1])
    assert cfg.model.thresholds_file.endswith(name[:-3] + '/thresholds.json')
    assert cfg.default_scope == 'mmpretrain'


def test_imagenet_recipe():
    cfg = load('dvt_deit-s_8xb128_in1k.py')
    m = cfg.model
    assert [e['grid'] for e in m.exits] == [7, 10, 14]
    assert m.feature_reuse and m.relation_reuse
    assert m.backbone_cfg.drop_path_rate == 0.1
    assert m.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert [a['type'] for a in m.train_cfg.augments] == ['Mixup', 'CutMix']
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    ema = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert ema and ema[0]['momentum'] == pytest.approx(1 - 0.99996)
    two = load('dvt-2exit_deit-s_8xb128_in1k.py').model.exits
    assert [(e['grid'], e['patch_size']) for e in two] == [(7, 32), (14, 16)]
    # the default follows the public code's tokenizers (patch 32 / 23 + padding 3 / 16 at 224)
    pub = m.exits
    assert [e['patch_size'] for e in pub] == [32, 23, 16] and pub[1]['patch_pad'] == 3
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        m = MODELS.build(dict(m, thresholds_file=None))
    assert [e.backbone.patch_resolution for e in m.exits] == [(7, 7), (10, 10), (14, 14)]
    assert all(e.input_size == 224 for e in m.exits)
    # the earlier default stays available: patch 16 on the image resized to grid * 16
    res = load('dvt-resize_deit-s_8xb128_in1k.py').model
    assert res.exits == [7, 10, 14] and res.patch_size == 16
    for name, f, r in (('dvt-noreuse', False, False), ('dvt-freuse', True, False),
                       ('dvt-rreuse', False, True)):
        m = load(f'{name}_deit-s_8xb128_in1k.py').model
        assert (m.feature_reuse, m.relation_reuse) == (f, r)


@pytest.mark.parametrize('name', CIFAR)
def test_cifar_recipe(name):
    cfg = load(name)
    n = 10 if 'cifar10-' in name else 100
    assert cfg.model.num_classes == n == cfg.model.data_preprocessor.num_classes
    # the tokenizers of the ImageNet model it fine-tunes
    assert cfg.model.exits == load('dvt_deit-s_8xb128_in1k.py').model.exits
    assert cfg.train_dataloader.dataset.type == f'CIFAR{n}'
    # fine-tuning at 224 so the exits see the ImageNet token grids
    assert cfg.train_dataloader.dataset.pipeline[0] == dict(type='Resize', scale=224,
                                                            interpolation='bicubic')
    assert cfg.val_dataloader.dataset.pipeline[0]['scale'] == 224
    assert cfg.model.init_cfg.type == 'Pretrained'


@pytest.mark.parametrize('name', IN1K + T2T + T2T_ABL)
def test_imagenet_schedule_is_the_public_codes(name):
    """timm's schedule of the public main.py: warm-up over 20 epochs from lr 1e-6, a cosine
    to 1e-5 at epoch 300, 10 cool-down epochs at 1e-5 (310 epochs); AMP in the T2T commands."""
    cfg = load(name)
    assert cfg.train_cfg.max_epochs == 310
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == 20
    assert warm.start_factor * cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-6)
    assert cos.type == 'CosineAnnealingLR' and (cos.begin, cos.end) == (20, 300)
    assert cos.eta_min == 1e-5
    amp = cfg.optim_wrapper.get('type') == 'AmpOptimWrapper'
    assert amp == ('t2t' in name)


def test_t2t_recipes():
    c12 = load('dvt_t2t-vit-12_8xb128_in1k.py')
    assert c12.model.host == 't2t' and c12.model.exits == [7, 10, 14]
    assert c12.optim_wrapper.optimizer.lr == 2e-3
    assert c12.optim_wrapper.optimizer.weight_decay == 0.03
    assert c12.train_dataloader.batch_size == 128
    c14 = load('dvt_t2t-vit-14_8xb64_in1k.py')
    assert c14.optim_wrapper.optimizer.lr == 5e-4
    assert c14.optim_wrapper.optimizer.weight_decay == 0.05
    assert c14.train_dataloader.batch_size == 64
    assert load('dvt-2exit_t2t-vit-12_8xb128_in1k.py').model.exits == [7, 14]
    for name, arch in zip(STATIC, ('t2t-vit-12', 't2t-vit-14')):
        cfg = load(name)
        assert cfg.model.backbone.type == 'mmdyn.T2TViT' and cfg.model.backbone.arch == arch
        assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)


def test_t2t_reuse_ablations():
    """Table 6 on its own host: T2T-ViT-12 with the T2T-12 recipe, reuse switched off/on, the
    built models' cumulative GFLOPs the paper's within 2 %."""
    base = load('dvt_t2t-vit-12_8xb128_in1k.py')
    paper = {'noreuse': (False, False, (0.47, 1.37, 3.15)),
             'freuse': (True, False, (0.47, 1.43, 3.31)),
             'rreuse': (False, True, (0.47, 1.41, 3.34))}
    init_default_scope('mmpretrain')
    for name in T2T_ABL:
        cfg = load(name)
        f, r, gflops = paper[name.split('_')[0].split('-')[1]]
        assert (cfg.model.feature_reuse, cfg.model.relation_reuse) == (f, r)
        assert cfg.model.host == 't2t' and cfg.model.exits == [7, 10, 14]
        assert cfg.optim_wrapper == base.optim_wrapper
        assert cfg.train_dataloader.batch_size == 128
        with torch.device('meta'):
            m = MODELS.build(dict(cfg.model, thresholds_file=None))
        for got, want in zip(m.cumulative_flops(), gflops):
            assert abs(got / 1e9 - want) / want < 0.02


@pytest.mark.parametrize('name', T2T_CIFAR + STATIC_CIFAR)
def test_t2t_cifar_recipe(name):
    """The public T2T-ViT transfer recipe: SGD 0.05 (pretrained parts x 0.01), wd 5e-4,
    momentum 0.9, batch 64, 60 epochs cosine to 2e-4, 224 px, crop padding 28."""
    cfg = load(name)
    n = 10 if 'cifar10-' in name else 100
    opt = cfg.optim_wrapper
    assert opt.optimizer == dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4)
    assert opt.paramwise_cfg.custom_keys['backbone'] == dict(lr_mult=0.01)
    assert 'clip_grad' not in opt
    assert cfg.param_scheduler == [dict(type='CosineAnnealingLR', T_max=60, eta_min=2e-4,
                                        by_epoch=True, begin=0, end=60)]
    assert cfg.train_cfg.max_epochs == 60 and cfg.train_dataloader.batch_size == 64
    assert cfg.auto_scale_lr.base_batch_size == 64
    assert cfg.train_dataloader.dataset.type == f'CIFAR{n}'
    pipe = cfg.train_dataloader.dataset.pipeline
    assert pipe[0] == dict(type='Resize', scale=224, interpolation='bilinear')
    assert pipe[1] == dict(type='RandomCrop', crop_size=224, padding=28)
    assert cfg.val_dataloader.dataset.pipeline[0]['scale'] == 224
    m = cfg.model
    assert m.data_preprocessor.num_classes == n
    assert m.data_preprocessor.mean == [125.307, 122.961, 113.8575]
    depth = int(name.split('_')[0 if name.startswith('t2t') else 1].split('-')[-1])
    init_default_scope('mmpretrain')
    if name.startswith('dvt'):
        assert m.num_classes == n and m.arch == f't2t-vit-{depth}' and m.host == 't2t'
        assert m.loss == dict(type='CrossEntropyLoss', loss_weight=1.0)
        assert m.init_cfg.checkpoint == f'work_dirs/dvt_t2t-vit-{depth}_' + \
            ('8xb128' if depth == 12 else '8xb64') + '_in1k/epoch_310.pth'
        assert 'feature_modules' in opt.paramwise_cfg.custom_keys
        with torch.device('meta'):
            model = MODELS.build(dict(m, thresholds_file=None, init_cfg=None))
        assert [e.head.fc.out_features for e in model.exits] == [n] * 3
        assert [e.backbone.grids[2] for e in model.exits] == [7, 10, 14]
    else:
        assert m.type == 'ImageClassifier' and m.head.num_classes == n
        assert m.backbone.arch == f't2t-vit-{depth}'
        assert m.head.in_channels == T2T_EMBED[depth]
        assert m.backbone.init_cfg == dict(
            type='Pretrained',
            checkpoint=f'work_dirs/pretrained/t2t-vit-{depth}_in1k_official.pth.tar')
        with torch.device('meta'):
            model = MODELS.build(m)
        assert model.backbone.grids[2] == 14 and model.head.num_classes == n


@pytest.mark.parametrize('name', STATIC_CIFAR[:2])
def test_static_t2t_cifar_runs(name):
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.arch = TINY
    cfg.model.backbone.img_size = 64
    cfg.model.backbone.token_dims = 8
    cfg.model.backbone.pop('init_cfg')
    cfg.model.head.in_channels = TINY['embed_dims']
    model = MODELS.build(cfg.model)
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['loss'])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert out.shape == (2, cfg.model.head.num_classes)


@pytest.mark.parametrize('name', STATIC)
def test_static_t2t_baselines_run(name):
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.arch = TINY
    cfg.model.backbone.img_size = 64
    cfg.model.backbone.token_dims = 8
    cfg.model.head.in_channels = TINY['embed_dims']
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert out.shape == (2, 1000)


def tiny_model(name):
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    m = cfg.model
    m.arch = TINY
    m.patch_size = 8
    m.exits = [2, 4] if len(m.exits) == 2 else [2, 3, 4]
    if m.get('host') == 't2t':
        m.exits = [T2T_TINY_EXITS[g] for g in m.exits]
        m.img_size = 64
        m.backbone_cfg.token_dims = 8
    m.thresholds = [0.0] * (len(m.exits) - 1)
    m.thresholds_file = None
    m.pop('init_cfg', None)
    return MODELS.build(m)


@pytest.mark.parametrize('name', DYN)
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


def test_runner_train_and_val_on_toy_imagenet(tmp_path, toy_imagenet):
    """The real config through mmengine's Runner: 2 training iterations and one validation with
    early exit; the complexity metric reports the realised FLOPs."""
    from mmengine.runner import Runner
    cfg = load('dvt_deit-s_8xb128_in1k.py')
    m = cfg.model
    m.arch = TINY
    m.patch_size = 8
    m.exits = [2, 3, 4]
    m.thresholds = [0.0, 0.0]  # everyone stops at the first exit
    m.thresholds_file = None
    for split in ('train', 'val'):
        dl = cfg[f'{split}_dataloader']
        dl.batch_size = 2
        dl.num_workers = 0
        dl.persistent_workers = False
        dl.dataset.data_root = toy_imagenet
        dl.dataset.split = split
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=32),
        dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
    cfg.val_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=32), dict(type='PackInputs')]
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(by_epoch=False, max_iters=2, val_interval=2)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'EMAHook']
    cfg.work_dir = str(tmp_path)
    cfg.pop('find_unused_parameters')
    cfg.launcher = 'none'
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    model = runner.model
    assert metrics['complexity/gflops'] == pytest.approx(model.exit_flops()[0] / 1e9)
    assert metrics['complexity/exit_ratio'] == pytest.approx(1.0)
    assert metrics['complexity/exit0_ratio'] == pytest.approx(1.0)
    assert metrics['complexity/static_gflops'] == pytest.approx(sum(model.exit_flops()) / 1e9)
    assert 'accuracy/top1' in metrics


def _public_deit_exit_params(patch, pad_grid, reuse, num_classes=1000):
    """Elements of one exit of the public code's DVT-DeiT-S, counted from its module list
    (timm ViT: conv patch embedding, class token, position table, 12 blocks with a fused qkv,
    final norm, head; with reuse the FFN input of every block is 384 + 48 wide, a per-block
    LN -> 128 -> 48 MLP and one 1x1-conv relation MLP 72 -> 216 -> 72)."""
    c, depth, hidden, m = 384, 12, 4 * 384, 6 * 12
    e = 48 if reuse else 0
    block = (2 * c + 3 * c * c + 3 * c + c * c + c + 2 * (c + e) + (c + e) * hidden + hidden
             + hidden * c + c)
    total = 3 * patch * patch * c + c + (pad_grid ** 2 + 1) * c + c + depth * block + 2 * c \
        + c * num_classes + num_classes
    if reuse:
        total += depth * (2 * c + c * 128 + 128 + 128 * 48 + 48)
        total += m * 3 * m + 3 * m + 3 * m * m + m
    return total


@pytest.mark.parametrize('name,exits', [
    ('dvt_deit-s_8xb128_in1k.py', ((32, 7, False), (23, 10, True), (16, 14, True))),
    ('dvt-2exit_deit-s_8xb128_in1k.py', ((32, 7, False), (16, 14, True)))])
def test_deit_default_is_public_layout(name, exits):
    """The DeiT DVT configs build the public code's model: parameter count of each exit equal
    to the count from the public module list (70.44 M for the three exits, the element count
    of the released DVT_Deit_small)."""
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        model = MODELS.build(dict(load(name).model, thresholds_file=None))
    got = [sum(p.numel() for p in e.parameters()) for e in model.exits]
    assert got == [_public_deit_exit_params(*e) for e in exits]
    if len(exits) == 3:
        assert sum(got) == 70442232
