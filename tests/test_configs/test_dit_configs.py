"""configs/dit: the paper's recipes as loaded, and every config built and run (tiny widths)."""
import copy
import functools
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

SIZES = {'b1': 2.0 / 2.1, 'b2': 3.8 / 4.0, 'b3': 6.8 / 6.9, 'b4': 9.9 / 10.1, 'b5': 10.3 / 11.8}
SEG = [f'fpn_dit-{b}_4xb4-40k_ade20k-512x512.py' for b in ('b1', 'b2', 'b3', 'b4')]
DET_1X = [f'{d}_dit-{b}_fpn_1x_coco.py' for d in ('retinanet', 'mask-rcnn')
          for b in ('b1', 'b2', 'b3', 'b4')]
DET_3X = [f'{d}_dit-{b}_fpn_ms-3x_coco.py' for d in ('retinanet', 'mask-rcnn')
          for b in ('b2', 'b3', 'b4')]
TABLE2 = [f'{d}_dit-b2_fpn_1x_coco.py' for d in ('cascade-mask-rcnn', 'atss', 'gfl',
                                                  'sparse-rcnn')]
DET = ['retinanet_dit-b2_fpn_1x_coco.py', 'mask-rcnn_dit-b2_fpn_1x_coco.py']
CLS = [f'dit-{b}_8xb128_in1k.py' for b in ('b1', 'b2', 'b3', 'b4', 'b5')]
ABL = {f'dit-b2-{r}_8xb128_in1k.py': r.replace('-', '_')
       for r in ('fully', 'static', 'random', 'attention', 'scale-only', 'depth-only')}
PVT_CLS = [f'pvtv2-{b}_8xb128_in1k.py' for b in ('b1', 'b2', 'b3', 'b4', 'b5')]
FORCED = 'dit-b2-forced-half_8xb128_in1k.py'
DIT_ALL = SEG + DET_1X + DET_3X + TABLE2 + CLS + list(ABL) + [FORCED]
# static PVTv2 baselines of the dense configs (tested in test_dit_baselines.py)
PVT_DENSE = [n.replace('_dit-', '_pvtv2-') for n in SEG + DET_1X + DET_3X + TABLE2]
ALL = DIT_ALL + PVT_CLS + PVT_DENSE

TINY = dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2],
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])


pytestmark = pytest.mark.usefixtures('one_thread')


@functools.lru_cache(maxsize=None)
def _load(name):
    return Config.fromfile(osp.join(DIT, name))


def load(name):
    return copy.deepcopy(_load(name))


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


@pytest.mark.parametrize('name', DIT_ALL)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    assert cfg.find_unused_parameters is True
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert 'mmdyn.DynamicStatsHook' in hooks and 'mmdyn.GateMomentumHook' in hooks
    assert any(e['type'] == 'mmdyn.ComplexityMetric' for e in cfg.val_evaluator)
    bb = cfg.model.backbone
    assert bb.type == 'mmdyn.DiT' and bb.num_stages == 4
    assert bb.routing == ABL.get(name, 'dynamic')
    size = name.split('dit-')[1][:2]
    assert bb.arch == size
    assert bb.budget == pytest.approx(SIZES[size])
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


@pytest.mark.parametrize('name', DET_1X + DET_3X + TABLE2)
def test_coco_recipe(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    # Sparse R-CNN: PVTv2's (whai362/PVT), which the paper's Table 2 detectors follow
    lr = 2.5e-5 / 1.4 if name.startswith('sparse') else 1e-4
    assert (opt.type, opt.lr) == ('AdamW', lr)
    if name.startswith('sparse'):
        assert cfg.model.rpn_head.num_proposals == cfg.model.test_cfg.rcnn.max_per_img == 300
    epochs = 36 if 'ms-3x' in name else 12
    assert cfg.train_cfg.max_epochs == epochs and cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]
    if 'ms-3x' in name:
        resize = cfg.train_dataloader.dataset.pipeline[2]
        assert resize.type == 'RandomChoiceResize'
        assert [s[1] for s in resize.scales] == [640, 672, 704, 736, 768, 800]
        assert cfg.param_scheduler[-1].milestones == [27, 33]
    size = name.split('dit-')[1][:2]
    assert cfg.model.backbone.init_cfg.checkpoint.endswith(f'pvt_v2_{size}.pth')
    # the official PVTv2 detection backbones' stochastic depth at every size (0.3 for B3-B5
    # is the ImageNet setting), for the DiT detector and its PVTv2 baseline
    assert cfg.model.backbone.drop_path_rate == 0.1
    baseline = name.replace('_dit-', '_pvtv2-')
    if osp.exists(osp.join(DIT, baseline)):
        assert load(baseline).model.backbone.drop_path_rate == 0.1


@pytest.mark.parametrize('name', CLS + list(ABL) + [FORCED] + PVT_CLS)
def test_imagenet_recipe(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[-1].type == 'CosineAnnealingLR'
    assert cfg.model.backbone.out_indices == (3, ) and cfg.model.head.in_channels == 512



def random_expected_cost(bb, img, p_row, p_col):
    """Exact expected realised MACs of routing='random' (independent of the gates' code): the
    15 column decisions are enumerated (a node is reached if its left node is or a taken path
    enters it), a reached stage costs its blocks at the expected kept count (the block cost is
    affine in the kept count; P(no token kept) is negligible at these sizes)."""
    import itertools
    shapes = bb.scale_shapes(img)
    M = bb.num_stages
    row = [sum(float(b.flops(p_row * hw[0] * hw[1], hw)) for b in bb.stages[i][0])
           for i, hw in enumerate(shapes)]
    col = [bb.downs[i][0].flops(shapes[i]) for i in range(3)]
    total = 0.
    for bits in itertools.product((0, 1), repeat=3 * (M + 1)):
        prob = 1.
        for v in bits:
            prob *= p_col if v else 1 - p_col
        reached = [[False] * (M + 1) for _ in range(4)]
        cost = float(bb.stem.flops(img))
        for j in range(M + 1):
            for i in range(4):
                on = lambda a, b: bits[a * (M + 1) + b]  # noqa: E731
                r = (i == 0 and j == 0) or (j > 0 and reached[i][j - 1]) or (
                    i > 0 and reached[i - 1][j] and on(i - 1, j))
                reached[i][j] = r
                if r and j < M:
                    cost += row[i]
                if r and i < 3 and on(i, j):
                    cost += col[i]
        total += prob * cost
    return total


def test_ablation_budgets():
    """Per ablation (README): 'fully' and 'random' learn no gate, so no budget loss is
    computed; the others keep the method's mu. The random keep ratios make the expected cost
    the dynamic model's budget (mu x C_base = 3.82 GFLOPs at 224)."""
    x = torch.randn(2, 3, 32, 32)
    for name, routing in ABL.items():
        bb = build(load(name)).backbone.train()
        bb(x)
        has_loss = 'loss_budget' in bb.aux_losses
        assert has_loss == (routing not in ('fully', 'random')), name
    with torch.device('meta'):
        cfg = load('dit-b2-random_8xb128_in1k.py')
        bb = build(cfg, tiny=False).backbone
    p_row, p_col = cfg.model.backbone.random_keep
    expect = random_expected_cost(bb, (224, 224), p_row, p_col)
    target = cfg.model.backbone.budget * bb.base_flops((224, 224))
    assert abs(expect / target - 1) < 0.01


PVT_DPR = {'b1': 0.1, 'b2': 0.1, 'b3': 0.3, 'b4': 0.3, 'b5': 0.3}


@pytest.mark.parametrize('name', PVT_CLS)
def test_pvtv2_baselines_use_the_dit_recipe(name):
    """The PVTv2 ImageNet baselines are the DiT config of the same size with the backbone
    replaced and the gate hooks / complexity metric removed; all else is equal."""
    size = name.split('pvtv2-')[1][:2]
    pvt = load(name).to_dict()
    dit = load(f'dit-{size}_8xb128_in1k.py').to_dict()
    bb = pvt['model'].pop('backbone')
    assert bb == dict(type='mmdyn.PVTv2', arch=size, drop_path_rate=PVT_DPR[size],
                      out_indices=(3, ))
    assert dit['model'].pop('backbone')['drop_path_rate'] == PVT_DPR[size]
    assert pvt['custom_hooks'] == [] and pvt['find_unused_parameters'] is False
    assert pvt['val_evaluator'] == [dict(type='Accuracy', topk=(1, 5))]
    for k in ('custom_hooks', 'find_unused_parameters', 'val_evaluator', 'test_evaluator'):
        pvt.pop(k)
        dit.pop(k)
    assert pvt == dit


def test_pvtv2_baseline_forward_and_loss():
    """The PVTv2 baseline (a tuple from the backbone) runs in mmpretrain's classifier."""
    model = build(load(PVT_CLS[1]))
    inputs, _ = generated_batch(model, (64, 64), batch_size=2)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(7)]
    model.eval()
    with torch.no_grad():
        assert model(inputs, samples, mode='tensor').shape == (2, 1000)
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])


def test_forced_config_and_cfg_options():
    """The speed-check config forces half of every stage's tokens on the PVTv2 path; the same
    forcing reaches any DiT config through --cfg-options (as benchmark.py / get_flops.py load
    them), and its realised FLOPs are those of the forced pattern."""
    from mmdyn.analysis.complexity import load_config
    cfg = load(FORCED)
    assert cfg.model.backbone.decision_override == dict(keep_ratio=0.5, columns='pvt')
    cfg2 = load_config(osp.join(DIT, CLS[1]), {
        'model.backbone.decision_override.keep_ratio': 0.5,
        'model.backbone.decision_override.columns': 'pvt'})
    assert cfg2.model.to_dict() == cfg.model.to_dict()
    bb = build(cfg).backbone.eval()
    full = build(load(CLS[1])).backbone.eval()
    full.set_routing('pvt')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        bb(x)
        full(x)
    assert full.last_flops.item() == bb.base_flops((64, 64))
    # every stage of the path keeps floor(N / 2) tokens; the realised FLOPs are exactly the
    # stem + each stage B[i][i] at those kept tokens + each PVTv2 column path P[i][i+1]
    # (no gate runs under forcing, no other stage or column path is reached)
    shapes = bb.scale_shapes((64, 64))
    want = float(bb.stem.flops((64, 64)))
    for i, hw in enumerate(shapes):
        k = (hw[0] * hw[1]) // 2
        assert bb.last_maps[f'row_{i}_{i}'].sum().item() == k
        want += sum(float(blk.flops(k, hw)) for blk in bb.stages[i][i])
        if i < 3:
            want += bb.downs[i][i + 1].flops(hw)
    assert bb.last_flops.item() == want
    assert 0.5 < want / full.last_flops.item() < 0.9



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


# Sparse R-CNN is only built (test_every_config_builds): with random tiny weights its iterative
# box refinement can produce boxes of negative size, which mmcv's RoIAlign rejects.
@pytest.mark.parametrize('name', DET + TABLE2[:3])
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
    model = build(load(CLS[1]))
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


def test_skip_stats_tool(toy_ade20k, tmp_path):
    """tools/analysis_tools/dit_skip_stats.py on the generated ADE20K set: ratios in [0, 1],
    scale 0 always reached, a JSON and a plot."""
    import json
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f"_base_ = '{osp.join(DIT, SEG[1])}'\n"
        f"model = dict(backbone=dict(arch=dict(_delete_=True, **{TINY!r}), init_cfg=None),\n"
        "             neck=dict(in_channels=[8, 16, 16, 32]))\n"
        "test_pipeline = [dict(type='LoadImageFromFile'),\n"
        "                 dict(type='Resize', scale=(64, 64), keep_ratio=True),\n"
        "                 dict(type='PackSegInputs')]\n"
        f"test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,\n"
        f"    dataset=dict(data_root='{toy_ade20k}', pipeline=test_pipeline))\n")
    out = tmp_path / 'out'
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'dit_skip_stats', osp.join(REPO, 'tools', 'analysis_tools', 'dit_skip_stats.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # in-process: the suite is already importing mmseg
    assert tool.main([str(cfg), '--out', str(out), '--device', 'cpu', '--max-images', '2']) == 0
    stats = json.load(open(out / 'dit_skip_stats.json'))
    assert stats['images'] == 2
    assert stats['reach_ratio'][0] == [1.0] * 5
    for row in stats['skip_ratio']:
        assert all(v != v or 0 <= v <= 1 for v in row)
    assert (out / 'dit_skip_stats.png').stat().st_size > 1000
    # --max-images inside a batch of 2: exactly that many images (was: the whole batch)
    assert tool.main([str(cfg), '--out', str(out), '--device', 'cpu', '--max-images', '1']) == 0
    assert json.load(open(out / 'dit_skip_stats.json'))['images'] == 1
    # the train split: random crops of different sizes in one batch (was: an AssertionError
    # of the data preprocessor)
    with open(cfg, 'a') as f:
        f.write(f"train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,\n"
                f"    dataset=dict(data_root='{toy_ade20k}'))\n")
    assert tool.main([str(cfg), '--out', str(out), '--device', 'cpu', '--split', 'train',
                      '--max-images', '3']) == 0
    assert json.load(open(out / 'dit_skip_stats.json'))['images'] == 3


@pytest.mark.parametrize('name', DIT_ALL + PVT_CLS)  # PVT_DENSE: test_dit_baselines.py
def test_every_config_builds(name):
    """Every config builds (tiny widths) into a model whose backbone is a DiT of that size's
    budget, and the backbone runs."""
    cfg = load(name)
    model = build(cfg).eval()
    bb = model.backbone
    if name in PVT_CLS:
        assert type(bb).__name__ == 'PVTv2'
        with torch.no_grad():
            assert bb(torch.randn(1, 3, 64, 64))[0].shape == (1, 32, 2, 2)
        return
    assert type(bb).__name__ == 'DiT'
    assert bb.budget_loss.target == pytest.approx(SIZES[name.split('dit-')[1][:2]])
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 64, 64))
    assert len(outs) == len(cfg.model.backbone.out_indices)
