"""tools/analysis_tools/get_flops.py and mmdyn.analysis.complexity.

Published figures (one FLOP = one multiply-add) reproduced by the static baseline configs:
Semantic FPN + PVTv2-B1/B2/B3/B4 at 512x512 (PVTv2 paper, Table 4) and ViT-S/16, DeiT-S at
224x224. The full-size models are built on the CPU; their backbones are counted analytically and
never run, only the neck and heads run once (traced by mmengine's FlopAnalyzer).
"""
import importlib.util
import json
import math
import os.path as osp
import textwrap

import pytest
import torch
import torch.nn as nn

from mmdyn.analysis.complexity import (ConfigError, group_breakdown, model_complexity,
                                       traced_flops)
from mmdyn.models.utils.dynamic import DynamicModuleMixin
from mmdyn.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASELINES = osp.join(REPO, 'configs', 'baselines')


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'_mmdyn_tool_{name}', osp.join(REPO, 'tools', 'analysis_tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


get_flops_tool = _load_tool('get_flops')


def run_get_flops(*argv):
    return get_flops_tool.get_flops(get_flops_tool.parse_args([str(a) for a in argv]))


# ----------------------------------------------------------------------------- published
# (config, GFLOPs, params in M) as published: PVTv2 paper Table 4 (Semantic FPN, ADE20K
# 512x512), DeiT paper / timm (DeiT-S, ViT-S/16 at 224x224: 4.6 GFLOPs, 22 M params).
PUBLISHED = [
    ('fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py', 34.2, 17.8),
    ('fpn_pvtv2-b2_4xb8-40k_ade20k-512x512.py', 45.8, 29.1),
    ('fpn_pvtv2-b3_4xb8-40k_ade20k-512x512.py', 62.4, 49.0),
    ('fpn_pvtv2-b4_4xb8-40k_ade20k-512x512.py', 81.3, 66.3),
    ('vit-small-p16_4xb256_in1k.py', 4.60, 22.1),
    ('deit-small_4xb256_in1k.py', 4.60, 22.1),
]


@pytest.mark.parametrize('config,gflops,mparams', PUBLISHED)
def test_published_figures(config, gflops, mparams):
    out = run_get_flops(osp.join(BASELINES, config))
    assert out['is_dynamic'] is False and out['flops_dynamic_mean'] is None
    assert out['backbone_method'] == 'analytic'
    assert out['flops'] == pytest.approx(gflops, rel=0.01), out['flops']
    assert out['params'] == pytest.approx(mparams, rel=0.01), out['params']
    assert out['flops'] == pytest.approx(out['backbone_flops'] + out['rest_flops'], rel=1e-9)


def test_published_semantic_fpn_split():
    """What the PVTv2 figures are made of at 512x512: Semantic FPN's neck + head cost the same
    ~21.5 G for B1..B4 (their stage widths are equal); the backbones differ."""
    out = run_get_flops(osp.join(BASELINES, PUBLISHED[0][0]))
    assert out['shape'] == [512, 512] and out['input_shape'] == [512, 512]
    assert out['rest_flops'] == pytest.approx(21.47, rel=0.005)
    bd = out['breakdown']
    assert bd['neck'] + bd['decode_head'] == pytest.approx(out['rest_flops'], rel=1e-6)
    stages = group_breakdown({k: v for k, v in bd.items() if k.startswith('backbone.')})
    assert list(stages) == [f'backbone.stages.{i}' for i in range(4)]
    assert sum(stages.values()) == pytest.approx(bd['backbone'], rel=1e-9)


def test_cli_json_subprocess(run_tool):
    proc = run_tool('analysis_tools/get_flops.py',
                    osp.join(BASELINES, 'fpn_pvtv2-b2_4xb8-40k_ade20k-512x512.py'), '--json')
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)  # stdout is the JSON object and nothing else
    for key in ('params', 'flops', 'flops_dynamic_mean', 'flops_dynamic_min',
                'flops_dynamic_max', 'unit', 'shape', 'breakdown'):
        assert key in out
    assert out['unit'].startswith('GFLOPs') and 'multiply-add' in out['unit']
    assert out['flops'] == pytest.approx(45.8, rel=0.01)
    assert out['flops_dynamic_mean'] is None
    assert out['shape'] == [512, 512]


def test_cli_text_and_backbone_only(capsys):
    cfg = osp.join(BASELINES, 'deit-small_4xb256_in1k.py')
    assert get_flops_tool.main([cfg, '--backbone-only', '--shape', '224']) == 0
    text = capsys.readouterr().out
    assert 'params' in text and 'FLOPs (static)' in text and 'blocks.11' in text
    # --json: one JSON object on stdout (mmpretrain's INFO log lines go to stderr)
    assert get_flops_tool.main([cfg, '--json']) == 0
    assert json.loads(capsys.readouterr().out)['flops'] == pytest.approx(4.6, rel=0.01)
    out = run_get_flops(cfg, '--backbone-only', '--json')
    # backbone only: patch embedding + 12 blocks, no classifier (384 x 1000 MACs)
    assert out['rest_flops'] == 0 and out['flops'] == out['backbone_flops']
    full = run_get_flops(cfg)
    assert (full['flops'] - out['flops']) * 1e9 == pytest.approx(384 * 1000)
    assert out['params'] < full['params']


def _mmpretrain_metafile(name):
    """The FLOPs and params mmpretrain publishes for one of its models (installed metafile)."""
    import mmpretrain
    import yaml
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs', 'deit', 'metafile.yml')
    with open(path) as f:
        models = yaml.safe_load(f)['Models']
    (meta, ) = [m['Metadata'] for m in models if m['Name'] == name]
    return meta


def test_traced_deit_small_matches_mmpretrain_metafile():
    """Traced (mmengine's FlopAnalyzer + our SDPA handle, norms at 5 per element as mmengine
    counts them), mmdyn's DeiT-S gives mmpretrain's published count exactly; the analytic count
    (no norms) is 0.2 % lower; params are the same to the unit."""
    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    meta = _mmpretrain_metafile('deit-small_4xb256_in1k')
    model = build_model_from_cfg(load_config(osp.join(BASELINES, 'deit-small_4xb256_in1k.py')))
    traced, _, _ = traced_flops(model.backbone, (torch.randn(1, 3, 224, 224), ))
    assert traced == meta['FLOPs']
    analytic = model.backbone.static_flops((224, 224))
    assert analytic < traced and traced / analytic - 1 < 0.003
    assert sum(p.numel() for p in model.parameters()) == meta['Parameters']


def test_traced_pvtv2_agrees_with_analytic():
    """The analytic PVTv2-B1 count (spatial-reduction attention included) against what the
    tracer sees run (plus norms, which the analytic count leaves out) at 224x224."""
    from mmdyn.models.backbones import PVTv2
    bb = PVTv2(arch='b1').eval()
    traced, by_mod, _ = traced_flops(bb, (torch.randn(1, 3, 224, 224), ))
    analytic = bb.static_flops((224, 224))
    assert analytic == pytest.approx(2.1e9, rel=0.01)  # published: 2.1 G (PVTv2 paper)
    assert analytic < traced and traced / analytic - 1 < 0.015
    assert by_mod['stages.3'] == pytest.approx(
        sum(v for k, v in bb.flops_breakdown((224, 224)).items() if k.startswith('stages.3')),
        rel=0.015)


# ----------------------------------------------------------------------------- errors
def test_missing_config(capsys):
    assert get_flops_tool.main(['configs/baselines/no_such_config.py']) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'config file not found' in err and 'no_such_config' in err
    with pytest.raises(ConfigError, match='not found'):
        run_get_flops('nowhere.py')


def test_unknown_type(tmp_path, capsys):
    cfg = tmp_path / 'bad.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(BASELINES, 'fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py')}'
        model = dict(backbone=dict(_delete_=True, type='mmdyn.NoSuchBackbone'))
    """))
    assert get_flops_tool.main([str(cfg)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'NoSuchBackbone' in err and err.startswith('error:')


def test_bad_shape():
    with pytest.raises(SystemExit):
        get_flops_tool.parse_args(['x.py', '--shape', '1', '2', '3'])


# ----------------------------------------------------------------------------- dynamic models
@MODELS.register_module(name='_ToyDynamicPyramid', force=True)
class ToyDynamicPyramid(DynamicModuleMixin, nn.Module):
    """Four strided convs (strides 4, 8, 16, 32). Per image, only the fraction ``keep`` of the
    positions of stages 1..3 whose input is brighter than the image mean 'run' (the maps are
    computed whole, the record says what a sparse kernel would have cost)."""

    def __init__(self, widths=(8, 16, 16, 32)):
        super().__init__()
        self.in_channels = 3
        self.widths = widths
        chans = (3, ) + tuple(widths)
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 4 if i == 0 else 2, 4 if i == 0 else 2)
            for i in range(4))
        self.reset_dynamic_records()

    def stage_flops(self, hw):
        h, w = hw
        res, chans = [], (3, ) + tuple(self.widths)
        for i in range(4):
            s, k = (4, 4) if i == 0 else (2, 2)
            h, w = h // s, w // s
            res.append(h * w * k * k * chans[i] * chans[i + 1])
        return res

    def static_flops(self, img_shape):
        return sum(self.stage_flops(img_shape))

    def flops_breakdown(self, img_shape):
        return {f'convs.{i}': f for i, f in enumerate(self.stage_flops(img_shape))}

    def forward(self, x):
        self._last_hw = tuple(x.shape[-2:])
        per = self.stage_flops(x.shape[-2:])
        bright = (x.mean(1) > x.mean((1, 2, 3)).view(-1, 1, 1)).double().mean((1, 2))
        keep = torch.ones_like(bright) if self.force_full else bright
        flops = per[0] + keep * sum(per[1:])
        self.record_dynamic(flops, stats=dict(kept_ratio=keep,
                                              flops_ratio=flops / sum(per)))
        self._last_keep = keep
        outs = []
        for conv in self.convs:
            x = conv(x)
            outs.append(x)
        return outs

    def block_table(self):
        """Per stage of the last forward, averaged over its images."""
        per = self.stage_flops(self._last_hw)
        keep = self._last_keep
        return [dict(block=i + 1, kept_ratio=1.0 if i == 0 else float(keep.mean()),
                     flops=float(per[i] * (1.0 if i == 0 else keep.mean())))
                for i in range(4)]


def _toy_seg_config(tmp_path, data_root=None):
    cfg = tmp_path / 'toy_dyn_fpn.py'
    extra = ''
    if data_root is not None:
        extra = f"""
        test_dataloader = dict(dataset=dict(data_root='{data_root}'))
        """
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(BASELINES, 'fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py')}'
        crop_size = (64, 64)
        model = dict(
            data_preprocessor=dict(size=crop_size),
            backbone=dict(_delete_=True, type='mmdyn._ToyDynamicPyramid'),
            neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
            decode_head=dict(in_channels=[16, 16, 16, 16], channels=8))
    """) + textwrap.dedent(extra))
    return str(cfg)


def test_dynamic_generated_images(tmp_path, capsys):
    cfg = _toy_seg_config(tmp_path, data_root=str(tmp_path / 'no_such_root'))
    out = run_get_flops(cfg, '--num-images', 3, '--shape', 64, 96)
    err = capsys.readouterr().err
    assert 'does not exist' in err and 'generated images' in err
    assert out['is_dynamic'] and out['images'] == 'generated' and out['num_images'] == 3
    static = out['flops']
    assert out['flops_dynamic_min'] <= out['flops_dynamic_mean'] <= out['flops_dynamic_max']
    assert out['flops_dynamic_max'] < static
    # realised = first stage + kept part of the others + the (static-shaped) neck and head
    per = ToyDynamicPyramid().stage_flops((64, 96))
    assert out['flops_dynamic_min'] * 1e9 >= per[0] + out['rest_flops'] * 1e9 - 1
    assert 0 < out['flops_dynamic_ratio'] < 1


def test_dynamic_stats_and_block_table(tmp_path, capsys):
    """Per-image statistics and the per-block table are averaged over the images: the kept ratio
    of each generated image is recomputed here independently."""
    from mmdyn.analysis.complexity import build_model_from_cfg, generated_images, load_config
    from mmdyn.analysis.complexity import preprocess, default_data_samples
    cfg = _toy_seg_config(tmp_path, data_root=str(tmp_path / 'no_such_root'))
    out = run_get_flops(cfg, '--num-images', 3, '--shape', 64, 96)
    model = build_model_from_cfg(load_config(cfg))
    keeps = []
    for im in generated_images(3, (64, 96), seed=1):
        x, _ = preprocess(model, [im], default_data_samples(model, 1, (64, 96)))
        keeps.append(float((x.mean(1) > x.mean((1, 2, 3)).view(-1, 1, 1)).double().mean()))
    mean_keep = sum(keeps) / 3
    assert len(set(round(k, 6) for k in keeps)) > 1  # the images differ
    assert out['stats_mean']['kept_ratio'] == pytest.approx(mean_keep, rel=1e-6)
    per = ToyDynamicPyramid().stage_flops((64, 96))
    assert out['stats_mean']['flops_ratio'] == pytest.approx(
        sum(per[0] + k * sum(per[1:]) for k in keeps) / 3 / sum(per), rel=1e-6)
    rows = out['block_tables']['backbone']
    assert [r['block'] for r in rows] == [1, 2, 3, 4]
    assert rows[0]['flops'] == pytest.approx(per[0])
    assert rows[2]['kept_ratio'] == pytest.approx(mean_keep, rel=1e-6)
    assert rows[3]['flops'] == pytest.approx(per[3] * mean_keep, rel=1e-6)
    text = get_flops_tool.format_text(out)
    assert 'per block of backbone' in text and 'kept_ratio' in text
    assert f'{per[0] / 1e9:.4f}' in text


def test_average_tables_weights_images():
    a = [dict(block=1, tokens=10.0, flops=100.0), dict(block=2, tokens=4.0, flops=40.0)]
    b = [dict(block=1, tokens=20.0, flops=200.0), dict(block=2, tokens=1.0, flops=10.0)]
    rows = get_flops_tool.average_tables([(1, a), (3, b)])
    assert rows == [dict(block=1, tokens=17.5, flops=175.0),
                    dict(block=2, tokens=1.75, flops=17.5)]


def test_average_tables_over_the_images_that_reached_a_block():
    """DiT's ``skip_reached`` (among the images that reached the node; NaN in a forward where
    none did) is averaged over the images that reached it: one image that missed the node
    does not turn the column into NaN."""
    nan = float('nan')
    tables = [(1, [dict(block='B', reached=1.0, skip_reached=0.5)]),
              (2, [dict(block='B', reached=0.5, skip_reached=0.2)]),  # one of two reached it
              (1, [dict(block='B', reached=0.0, skip_reached=nan)])]
    (row, ) = get_flops_tool.average_tables(tables)
    assert row['reached'] == 0.5  # (1 + 2 * 0.5 + 0) / 4
    assert row['skip_reached'] == pytest.approx((1 * 0.5 + 1 * 0.2) / 2)
    (row, ) = get_flops_tool.average_tables(tables[2:])
    assert math.isnan(row['skip_reached'])  # no image reached it


def test_dynamic_dataset_images(tmp_path, toy_ade20k, capsys):
    cfg = _toy_seg_config(tmp_path, data_root=toy_ade20k)
    out = run_get_flops(cfg, '--num-images', 2, '--json')
    assert out['images'] == 'dataset' and out['num_images'] == 2
    assert 'generated' not in capsys.readouterr().err
    assert out['flops_dynamic_mean'] is not None and out['flops_dynamic_mean'] > 0
    # the ratio is against the static cost of those images, at their own size: said in the
    # text whenever that differs from the static figure printed above it (at --shape's size)
    assert out['flops_static_on_images_mean'] != pytest.approx(out['flops'])
    assert out['flops_dynamic_ratio'] == pytest.approx(
        out['flops_dynamic_mean'] / out['flops_static_on_images_mean'], rel=0.05)
    text = get_flops_tool.format_text(out)
    assert (f'of static on those images: {out["flops_static_on_images_mean"]:.2f} GFLOPs'
            in text)


def test_cfg_options(tmp_path):
    """--cfg-options reach the model: 19 instead of 150 classes removes exactly the classifier's
    131 x 8 channels at stride 4."""
    cfg = _toy_seg_config(tmp_path)
    a = run_get_flops(cfg, '--shape', 64, '--num-images', 1)
    b = run_get_flops(cfg, '--shape', 64, '--num-images', 1, '--cfg-options',
                      'model.decode_head.num_classes=19')
    assert round((a['flops'] - b['flops']) * 1e9) == 131 * 8 * 16 * 16
    assert round((a['params'] - b['params']) * 1e6) == 131 * (8 + 1)


def test_model_complexity_realised_per_image():
    """Realised figure per image = the backbone's last_flops + the rest per image."""
    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    cfg = load_config(osp.join(BASELINES, 'fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py'))
    cfg.model.backbone = dict(type='mmdyn._ToyDynamicPyramid')
    cfg.model.neck.update(in_channels=[8, 16, 16, 32], out_channels=16)
    cfg.model.decode_head.update(in_channels=[16] * 4, channels=8)
    model = build_model_from_cfg(cfg)
    inputs, samples = generated_batch(model, (64, 64), batch_size=3)
    res = model_complexity(model, inputs=inputs, data_samples=samples)
    bb = model.backbone
    assert res['is_dynamic'] and res['batch_size'] == 3
    assert torch.equal(res['backbone_flops_dynamic'], bb.last_flops)
    assert torch.allclose(res['flops_dynamic'], bb.last_flops + res['rest_flops'])
    assert res['backbone_flops'] == bb.static_flops((64, 64))
    # the static count did not disturb the records of the real forward
    static = model_complexity(model, img_shape=(64, 64))
    assert torch.equal(bb.last_flops, res['backbone_flops_dynamic'])
    assert static['flops'] == pytest.approx(res['flops'])
    assert static['flops_dynamic'] is None
    with pytest.raises(ValueError, match='inputs or img_shape'):
        model_complexity(model)


# ----------------------------------------------------------------------------- traced parts
def test_traced_backbone_counts_sdpa():
    """A backbone without analytic formulas is traced; the SDPA products mmengine drops are
    counted by our handle."""

    class Attn(nn.Module):

        def __init__(self, c=32, heads=4):
            super().__init__()
            self.qkv = nn.Linear(c, 3 * c)
            self.heads = heads

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(
                2, 0, 3, 1, 4)
            return nn.functional.scaled_dot_product_attention(q, k, v)

    class Bare(nn.Module):

        def __init__(self):
            super().__init__()
            self.in_channels = 3
            self.embed = nn.Conv2d(3, 32, 8, 8)
            self.attn = Attn()

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            return self.attn(t)

    m = Bare().eval()
    res = model_complexity(m, img_shape=(64, 64))
    n = 64
    expected = n * 8 * 8 * 3 * 32 + n * 32 * 96 + 2 * n * n * 32
    assert res['backbone_method'] == 'traced'
    assert res['flops'] == expected
    total, _, _ = traced_flops(m, (torch.zeros(1, 3, 64, 64), ))
    assert total == expected


TINY_PVT = ("dict(_delete_=True, embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1], "
            "num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])")


def test_mmdet_configs_tiny(tmp_path):
    """RetinaNet and Mask R-CNN: backbone analytic, the rest (FPN, heads; RPN + RoI heads of
    the two-stage detector) traced through mmdet's tensor-mode forward."""
    for name in ('retinanet_pvtv2-b2_fpn_1x_coco.py', 'mask-rcnn_pvtv2-b2_fpn_1x_coco.py'):
        cfg = tmp_path / f'tiny_{name}'
        cfg.write_text(textwrap.dedent(f"""
            _base_ = '{osp.join(BASELINES, name)}'
            model = dict(backbone=dict(arch={TINY_PVT}), neck=dict(in_channels=[16, 16, 32, 32]))
        """))
        out = run_get_flops(cfg, '--shape', 100, 120)
        assert out['input_shape'] == [128, 128]  # padded to a multiple of 32 by mmdet
        assert out['backbone_method'] == 'analytic'
        assert out['rest_flops'] > 0 and 'neck' in out['breakdown']
        heads = [k for k in out['breakdown'] if k.endswith('head')]
        assert heads, out['breakdown']
        if name.startswith('mask'):
            assert {'rpn_head', 'roi_head'} <= set(heads)
        else:
            assert heads == ['bbox_head']


def test_sparse_rcnn_tiny(tmp_path):
    """Sparse R-CNN's heads read the ground truth even in tensor mode and its learned proposals
    are only valid boxes after their own initialisation: both handled. Its RoI head runs on
    every proposal of an image (6 stages), so the count scales with their number (the config's
    300 cut to 100 and 50 here, for time)."""
    name = 'sparse-rcnn_pvtv2-b2_fpn_1x_coco.py'
    cfg = tmp_path / f'tiny_{name}'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(REPO, 'configs', 'dit', name)}'
        model = dict(backbone=dict(arch={TINY_PVT}), neck=dict(in_channels=[16, 16, 32, 32]),
                     rpn_head=dict(num_proposals=100))
    """))
    a = run_get_flops(cfg, '--shape', 64, 64)
    b = run_get_flops(cfg, '--shape', 64, 64, '--cfg-options', 'model.rpn_head.num_proposals=50')
    assert a['breakdown']['roi_head'] > 0
    assert b['breakdown']['roi_head'] == pytest.approx(a['breakdown']['roi_head'] / 2, rel=0.02)


def test_init_task_heads_initialises_the_heads_only():
    """Every ``*head`` child runs its own ``init_weights`` (an init_cfg, or an override such as
    a query-based head's constant proposals); backbone and neck keep their weights; mmengine's
    per-parameter initialisation report is not logged."""
    import logging

    from mmengine.logging import MMLogger
    from mmengine.model import BaseModule

    from mmdyn.analysis.complexity import init_task_heads

    class Linear(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.))
            self.fc = nn.Linear(3, 3)

    class Queries(BaseModule):
        def __init__(self):
            super().__init__()
            self.boxes = nn.Embedding(4, 4)

        def init_weights(self):
            super().init_weights()
            nn.init.constant_(self.boxes.weight, 0.25)

    torch.manual_seed(0)
    model = nn.Module()
    model.backbone, model.neck, model.rpn_head, model.roi_head = (Linear(), Linear(), Queries(),
                                                                   Linear())
    kept = {k: v.clone() for k, v in model.state_dict().items()
            if k.startswith(('backbone.', 'neck.'))}
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        init_task_heads(model)
    finally:
        logger.removeHandler(handler)
    assert torch.equal(model.rpn_head.boxes.weight, torch.full((4, 4), 0.25))
    assert torch.equal(model.roi_head.fc.weight, torch.full((3, 3), 0.5))
    assert torch.equal(model.roi_head.fc.bias, torch.zeros(3))
    assert len(kept) == 4 and not torch.equal(kept['backbone.fc.weight'], torch.full((3, 3), 0.5))
    for k, v in kept.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not [r for r in records if 'torch.Size' in r.getMessage()]


@pytest.mark.parametrize('config', ['fpn_dge-pvt-tiny_toy-ade20k.py',
                                    'fpn_dit-tiny_toy-ade20k.py'])
def test_static_count_keeps_the_records_of_the_last_forward(config):
    """Static figures at another size (the backbone run on meta tensors) leave every record of
    the last real forward as it was: its block table, FLOPs, stats and maps."""
    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    model = build_model_from_cfg(load_config(osp.join(REPO, 'configs', '_tiny_', config)))
    bb = model.backbone
    x, samples = generated_batch(model, (64, 64), 2)
    with torch.no_grad():
        model(x, samples, mode='tensor')
    table = bb.block_table()
    records = {k: v for k, v in vars(bb).items() if k.startswith(('last_', '_last_'))}
    model_complexity(model, img_shape=(96, 128))
    same = lambda a, b: a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))  # noqa
    after = bb.block_table()
    assert len(after) == len(table)
    assert all(r.keys() == q.keys() and all(same(r[k], q[k]) for k in r)
               for r, q in zip(after, table))
    for k, v in records.items():
        assert getattr(bb, k) is v, k
