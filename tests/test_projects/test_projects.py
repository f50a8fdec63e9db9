"""projects/: stock mmdet / mmseg configs with an mmdyn backbone swapped in.

For every project config: it differs from the stock config it inherits only in the keys its
README lists; it builds; with tiny widths, one training step gives finite losses and gradient on
the dynamic backbone's gate parameters, and one predict step returns the codebase's data sample
with the per-image realised FLOPs in its metainfo.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import InstanceData, PixelData

from mmdyn.analysis.complexity import default_data_samples, generated_images
from mmdyn.models.utils.records import attach_dynamic_records

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PROJ = osp.join(REPO, 'projects')

UPERNET = 'upernet_dge-pvt/configs/upernet_dge-pvt-s_4xb4-160k_ade20k-512x512.py'
CASCADE = 'cascade-mask-rcnn_dit-b2/configs/cascade-mask-rcnn_dit-b2_fpn_ms-3x_coco.py'
SEGFORMER = ('segformer-head_msvit/configs/'
             'segformer-head_msvit-s-p16-32_8xb2-160k_ade20k-512x512.py')
ALL = [UPERNET, CASCADE, SEGFORMER]

# the stock config each project inherits, and the config keys the project changes (README)
STOCK = {
    UPERNET: 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    CASCADE: 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py',
    SEGFORMER: 'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
}
CHANGED = {
    UPERNET: {'custom_imports', 'model.pretrained', 'model.backbone',
              'model.decode_head.in_channels', 'model.auxiliary_head.in_channels',
              'optim_wrapper', 'custom_hooks', 'val_evaluator', 'test_evaluator',
              'find_unused_parameters'},
    CASCADE: {'custom_imports', 'model.backbone', 'model.neck.in_channels', 'optim_wrapper',
              'custom_hooks', 'val_evaluator', 'test_evaluator', 'find_unused_parameters'},
    SEGFORMER: {'custom_imports', 'checkpoint', 'model.backbone', 'model.neck',
                'model.decode_head.in_channels', 'custom_hooks', 'val_evaluator',
                'test_evaluator', 'find_unused_parameters'},
}
# the plug-in base's variables come along with the DiT project's inheritance
PLUGIN_VARS = {'dit_b2_backbone', 'dit_b2_neck_in_channels', 'dit_optim_wrapper',
               'dit_custom_hooks'}


pytestmark = pytest.mark.usefixtures('one_thread')


_CACHE = {}


def load(path):
    if path not in _CACHE:
        if '::' in path:  # a stock config: through a one-line child, as a project reaches it
            import tempfile
            with tempfile.TemporaryDirectory() as d:
                stub = osp.join(d, 'stock.py')
                with open(stub, 'w') as f:
                    f.write(f'_base_ = {path!r}\n')
                _CACHE[path] = Config.fromfile(stub)
        else:
            _CACHE[path] = Config.fromfile(osp.join(PROJ, path))
    return copy.deepcopy(_CACHE[path])


def _flatten(d, prefix=''):
    """Dotted keys of nested dicts (lists and the backbone, which is replaced whole, are values)."""
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict) and v and k != 'backbone':
            out.update(_flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def _changed_keys(cfg, stock):
    a, b = _flatten(cfg.to_dict()), _flatten(stock.to_dict())
    return {k for k in set(a) | set(b) if a.get(k, '<absent>') != b.get(k, '<absent>')}


def _covered(key, entries):
    return any(key == e or key.startswith(e + '.') for e in entries)


def test_every_project_has_config_and_readme():
    found = sorted(osp.relpath(p, PROJ) for p in glob.glob(osp.join(PROJ, '*', 'configs', '*.py')))
    assert found == sorted(ALL)
    for path in ALL:
        readme = open(osp.join(PROJ, path.split('/')[0], 'README.md')).read()
        name = osp.basename(path)
        assert f'projects/{path}' in readme  # the train / test commands use the real path
        assert 'tools/train.py' in readme and 'tools/test.py' in readme
        assert 'dist_train.sh' in readme
        assert STOCK[path] in readme, name


@pytest.mark.parametrize('path', ALL)
def test_differs_from_the_stock_config_only_where_the_readme_says(path):
    cfg, stock = load(path), load(STOCK[path])
    changed = _changed_keys(cfg, stock)
    allowed = CHANGED[path] | (PLUGIN_VARS if path == CASCADE else set())
    extra = sorted(k for k in changed if not _covered(k, allowed))
    assert not extra, extra
    # and every listed change is real (nothing stale in the list)
    for entry in CHANGED[path]:
        assert any(_covered(k, {entry}) for k in changed), entry
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.model.backbone.type.startswith('mmdyn.')
    assert cfg.find_unused_parameters is True
    assert any(e.type == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    assert any(h.type == 'mmdyn.DynamicStatsHook' for h in cfg.custom_hooks)


def test_cascade_reuses_the_dit_plugin():
    cfg = load(CASCADE)
    plugin = Config.fromfile(osp.join(REPO, 'configs/dit/_base_/dit-b2_detector-plugin.py'))
    bb = dict(cfg.model.backbone)
    ref = dict(plugin.dit_b2_backbone)
    ref.pop('_delete_', None)
    bb.pop('_delete_', None)
    assert bb == ref
    assert cfg.model.neck.in_channels == plugin.dit_b2_neck_in_channels
    assert cfg.optim_wrapper.optimizer == plugin.dit_optim_wrapper.optimizer
    # the stock multi-scale 3x schedule stays (RepeatDataset x3, 12 epochs, lr steps 9 / 11)
    assert cfg.train_dataloader.dataset.type == 'RepeatDataset'
    assert cfg.train_dataloader.dataset.times == 3 and cfg.train_cfg.max_epochs == 12


# ----------------------------------------------------------------------------- tiny models
TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_DIT = dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)


def tiny(path, size):
    cfg = load(path)
    m = cfg.model
    if path == UPERNET:
        cfg.merge_from_dict(dict(model=dict(
            data_preprocessor=dict(size=size),
            backbone=dict(arch=dict(_delete_=True, **TINY_PVT), init_cfg=None),
            decode_head=dict(in_channels=[16, 16, 32, 32], channels=16),
            auxiliary_head=dict(in_channels=32, channels=8))))
    elif path == SEGFORMER:
        cfg.merge_from_dict(dict(model=dict(
            data_preprocessor=dict(size=size),
            backbone=dict(arch=dict(_delete_=True, **TINY_VIT), img_size=size, init_cfg=None),
            neck=dict(in_channels=[32], out_channels=16),
            decode_head=dict(in_channels=[16] * 4, channels=16))))
    else:
        cfg.merge_from_dict(dict(model=dict(
            backbone=dict(arch=dict(_delete_=True, **TINY_DIT), init_cfg=None),
            neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
            rpn_head=dict(in_channels=16, feat_channels=16),
            roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                          mask_roi_extractor=dict(out_channels=16),
                          mask_head=dict(in_channels=16, conv_out_channels=16)))))
        for h in m.roi_head.bbox_head:  # a list in the stock config: one head per stage
            h.update(in_channels=16, fc_out_channels=32)
        cfg.model.roi_head.bbox_head = m.roi_head.bbox_head
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return cfg, model


def _with_ground_truth(path, model, size, batch):
    h, w = size
    samples = default_data_samples(model, batch, size)
    g = torch.Generator().manual_seed(0)
    for s in samples:
        if path == CASCADE:
            from mmdet.structures.mask import BitmapMasks
            gt = InstanceData()
            gt.bboxes = torch.tensor([[8., 8., 40., 48.], [30., 20., 60., 60.]])
            gt.labels = torch.tensor([3, 17])
            m = torch.zeros(2, h, w, dtype=torch.uint8)
            m[0, 8:48, 8:40] = 1
            m[1, 20:60, 30:60] = 1
            gt.masks = BitmapMasks(m.numpy(), h, w)
            s.gt_instances = gt
        else:
            s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w), generator=g))
    return samples


def _gate_params(model):
    return {n: p for n, p in model.backbone.named_parameters() if 'gate' in n and p.requires_grad}


SIZE = {UPERNET: (64, 64), SEGFORMER: (64, 64), CASCADE: (64, 64)}
AUX_LOSS = {UPERNET: 'loss_budget', SEGFORMER: 'loss_gate_gbas', CASCADE: 'loss_budget'}


@pytest.mark.parametrize('path', ALL)
def test_tiny_train_step_and_predict(path):
    torch.manual_seed(0)
    size = SIZE[path]
    cfg, model = tiny(path, size)
    attach_dynamic_records(model)
    gates = _gate_params(model)
    assert gates, 'the dynamic backbone has trainable gate parameters'

    # one training step through the codebase's own train_step and an optimiser
    from mmengine.optim import build_optim_wrapper
    ow = copy.deepcopy(cfg.optim_wrapper)
    ow.pop('_scope_', None)
    optim = build_optim_wrapper(model, ow)
    data = dict(inputs=generated_images(2, size, 0),
                data_samples=_with_ground_truth(path, model, size, 2))
    model.train()
    before = {n: p.detach().clone() for n, p in gates.items()}
    captured = {}

    def keep_grads():
        captured.update({n: (p.grad.detach().clone() if p.grad is not None else None)
                         for n, p in gates.items()})

    orig_step = optim.step

    def step(*a, **k):
        keep_grads()
        return orig_step(*a, **k)

    optim.step = step
    log_vars = model.train_step(data, optim)
    assert torch.isfinite(log_vars['loss'])
    for k, v in log_vars.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), k
    assert AUX_LOSS[path] in log_vars  # the backbone's budget / gate loss joined the loss dict
    with_grad = [n for n, g in captured.items() if g is not None and g.abs().sum() > 0]
    assert with_grad, 'no gradient reached the gates'
    # the optimiser moved the gates that got gradient
    assert any(not torch.equal(before[n], gates[n].detach()) for n in with_grad)

    # one predict step: the codebase's data sample with per-image realised FLOPs
    model.eval()
    with torch.no_grad():
        preds = model.test_step(dict(inputs=generated_images(2, size, 1),
                                     data_samples=default_data_samples(model, 2, size)))
    if path == CASCADE:
        from mmdet.structures import DetDataSample
        assert all(isinstance(p, DetDataSample) for p in preds)
        assert preds[0].pred_instances.bboxes.shape[-1] == 4
        assert preds[0].pred_instances.masks.shape[-2:] == size
    else:
        from mmseg.structures import SegDataSample
        assert all(isinstance(p, SegDataSample) for p in preds)
        assert preds[0].pred_sem_seg.data.shape == (1, *size)
    for p in preds:
        flops = p.metainfo['dynamic_flops']
        static = p.metainfo['dynamic_static_flops']
        # (the gates' own cost can put a fresh model's realised FLOPs slightly above static)
        assert flops > 0 and static > 0
        assert p.metainfo['dynamic_stats']['flops_ratio'] == pytest.approx(flops / static)


# ----------------------------------------------------------------------------- full size
# the method's own config whose backbone (or, for DiT, whole model) the project must equal
REFERENCE = {
    UPERNET: ('configs/dge/fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py', 'backbone'),
    CASCADE: ('configs/dit/cascade-mask-rcnn_dit-b2_fpn_1x_coco.py', None),
    SEGFORMER: ('configs/msvit/segmenter_msvit-s-p16-32-g0.5_mask_8xb1-160k_ade20k-512x512.py',
                'backbone'),
}


def _meta_build(cfg):
    init_default_scope(cfg.default_scope)
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def _shapes(module):
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


@pytest.mark.parametrize('path', ALL)
def test_full_size_model_builds_with_the_methods_backbone(path):
    """The real project config (no overrides) builds; its backbone has exactly the parameters of
    the backbone of the method's own config (for Cascade Mask R-CNN the whole model equals the
    1x DiT config's: they differ in the schedule only), and the necks and heads take its widths.
    """
    model = _meta_build(load(path))
    ref_path, part = REFERENCE[path]
    ref_cfg = Config.fromfile(osp.join(REPO, ref_path))
    ref_cfg.model.backbone.pop('gate_checkpoint', None)  # a file that training would write
    if part is None:
        assert _shapes(model) == _shapes(_meta_build(ref_cfg))
    else:
        init_default_scope(ref_cfg.default_scope)
        with torch.device('meta'):
            ref = MODELS.build(ref_cfg.model.backbone)
        ours, theirs = _shapes(model.backbone), _shapes(ref)
        # the project trains MSViT's gate with the gBaS loss (learned priors); Segmenter freezes it
        extra = {k for k in ours if k.startswith('gate_loss.')}
        assert extra == ({'gate_loss.prior_logits'} if path == SEGFORMER else set())
        assert {k: v for k, v in ours.items() if k not in extra} == theirs
    widths = model.backbone.embed_dims
    if path == UPERNET:
        assert widths == [64, 128, 320, 512]
        assert [c.in_channels for c in model.decode_head.lateral_convs] == widths[:3]
        assert model.decode_head.in_channels == widths
        assert model.auxiliary_head.in_channels == widths[2]
    elif path == SEGFORMER:
        assert model.neck.in_channels == [widths] == [384]
        assert len(model.neck.convs) == 4 and model.decode_head.in_channels == [256] * 4
    else:
        assert list(model.neck.in_channels) == list(widths)
