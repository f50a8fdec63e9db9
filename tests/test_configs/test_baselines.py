"""configs/baselines: the recipes as loaded, and every config built and run (tiny widths)."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

from mmdyn.analysis.complexity import default_data_samples, generated_batch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASELINES = osp.join(REPO, 'configs', 'baselines')

SEG = [f'fpn_pvtv2-{b}_4xb8-40k_ade20k-512x512.py' for b in ('b1', 'b2', 'b3', 'b4')]
CLS = ['vit-small-p16_4xb256_in1k.py', 'deit-small_4xb256_in1k.py']
DET = ['retinanet_pvtv2-b2_fpn_1x_coco.py', 'mask-rcnn_pvtv2-b2_fpn_1x_coco.py']

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)


def load(name):
    return Config.fromfile(osp.join(BASELINES, name))


def build(cfg):
    init_default_scope(cfg.default_scope)
    return revert_sync_batchnorm(MODELS.build(cfg.model)).eval()


def test_all_listed():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(BASELINES, '*.py')))
    assert found == sorted(SEG + CLS + DET)
    readme = open(osp.join(BASELINES, 'README.md')).read()
    for name in found:
        assert name in readme


@pytest.mark.parametrize('name', SEG + CLS + DET)
def test_common(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmdyn'], allow_failed_imports=False)
    bb = cfg.model.backbone
    assert bb.type in ('mmdyn.PVTv2', 'mmdyn.ViT')
    # the replaced backbone kept nothing of the base's (mmseg's ResNet, mmdet's PVTv2)
    assert 'depth' not in bb and 'num_layers' not in bb and 'style' not in bb


@pytest.mark.parametrize('name', SEG)
def test_semantic_fpn_recipe(name):
    cfg = load(name)
    arch = name.split('_')[1].split('-')[1]
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.backbone.arch == arch
    assert cfg.model.backbone.init_cfg.checkpoint.endswith(f'pvt_v2_{arch}.pth')
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]
    assert cfg.model.neck.out_channels == 256
    assert cfg.model.decode_head.type == 'FPNHead' and cfg.model.decode_head.channels == 128
    assert cfg.model.decode_head.num_classes == 150
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 2e-4, 1e-4)
    assert 'momentum' not in opt
    (sched, ) = cfg.param_scheduler
    assert (sched.type, sched.power, sched.eta_min, sched.end) == ('PolyLR', 0.9, 0.0, 40000)
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.train_dataloader.batch_size * 4 == 32  # 4 GPUs x 8
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.test_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'


@pytest.mark.parametrize('name', CLS)
def test_imagenet_recipe(name):
    cfg = load(name)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.model.backbone.arch == ('vit-s' if name.startswith('vit') else 'deit-s')
    assert cfg.model.backbone.out_type == 'cls_token' and cfg.model.backbone.patch_size == 16
    assert cfg.model.head.in_channels == 384 and cfg.model.head.num_classes == 1000
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.lr == pytest.approx(1e-3) and opt.weight_decay == 0.05
    assert cfg.train_dataloader.batch_size == 256 and cfg.train_cfg.max_epochs == 300
    assert cfg.test_dataloader.dataset.data_root == 'data/imagenet'


@pytest.mark.parametrize('name', DET)
def test_coco_recipe(name):
    cfg = load(name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.backbone.arch == 'b2'
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]
    opt = cfg.optim_wrapper.optimizer
    lr = 1e-4 if name.startswith('retinanet') else 2e-4
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', lr, 1e-4)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.test_dataloader.dataset.data_root == 'data/coco/'


# ----------------------------------------------------------------------------- build + forward
@pytest.mark.parametrize('name', SEG)
def test_semantic_fpn_forward(name):
    cfg = load(name)
    cfg.model.backbone.arch = TINY_PVT
    cfg.model.neck.in_channels = [16, 16, 32, 32]
    model = build(cfg)
    assert type(model.backbone).__name__ == 'PVTv2'
    inputs, samples = generated_batch(model, (64, 96), batch_size=2)
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
        preds = model(inputs, samples, mode='predict')
    assert logits.shape == (2, 150, 16, 24)
    assert len(preds) == 2 and preds[0].pred_sem_seg.data.shape == (1, 64, 96)
    assert preds[0].seg_logits.data.shape == (150, 64, 96)


@pytest.mark.parametrize('name', SEG)
def test_semantic_fpn_full_size_build(name):
    """The real architecture (no overrides) builds; its stage widths feed the neck."""
    cfg = load(name)
    with torch.device('meta'):
        model = build(cfg)
    assert model.backbone.embed_dims == [64, 128, 320, 512]
    assert model.backbone.depths == {
        'b1': [2, 2, 2, 2], 'b2': [3, 4, 6, 3], 'b3': [3, 4, 18, 3], 'b4': [3, 8, 27, 3]
    }[cfg.model.backbone.arch]
    assert [c.conv.in_channels for c in model.neck.lateral_convs] == [64, 128, 320, 512]


@pytest.mark.parametrize('name,mparams', [(DET[0], 35.1), (DET[1], 45.0)])
def test_coco_full_size_params(name, mparams):
    """The real detectors have the sizes the PVTv2 paper gives (Table 3: RetinaNet 35.1 M,
    Mask R-CNN 45.0 M with PVTv2-B2)."""
    with torch.device('meta'):
        model = build(load(name))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(mparams, abs=0.05)


@pytest.mark.parametrize('name', CLS)
def test_imagenet_forward(name):
    cfg = load(name)
    cfg.model.backbone.arch = TINY_VIT
    cfg.model.head.in_channels = 32
    model = build(cfg)
    assert type(model.backbone).__name__ == 'ViT'
    inputs, samples = generated_batch(model, (64, 64), batch_size=2)
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
        preds = model(inputs, samples, mode='predict')
    assert logits.shape == (2, 1000)
    assert preds[0].pred_score.shape == (1000, )
    assert torch.allclose(preds[0].pred_score.sum(), torch.tensor(1.), atol=1e-5)


def test_retinanet_forward():
    cfg = load(DET[0])
    cfg.model.backbone.arch = TINY_PVT
    cfg.model.neck.in_channels = [16, 16, 32, 32]
    model = build(cfg)
    inputs, samples = generated_batch(model, (120, 100), batch_size=1)
    assert inputs.shape[-2:] == (128, 128)  # padded to a multiple of 32
    with torch.no_grad():
        cls_scores, bbox_preds = model(inputs, samples, mode='tensor')
        preds = model(inputs, samples, mode='predict')
    # FPN from stride 8 to 128 (extra levels on the input), 9 anchors, 80 classes
    assert [tuple(c.shape) for c in cls_scores] == [(1, 720, s, s) for s in (16, 8, 4, 2, 1)]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, 36, s, s) for s in (16, 8, 4, 2, 1)]
    inst = preds[0].pred_instances
    assert inst.bboxes.shape[1] == 4 and len(inst.scores) == len(inst.labels)


def test_mask_rcnn_forward():
    cfg = load(DET[1])
    cfg.model.backbone.arch = TINY_PVT
    cfg.model.neck.in_channels = [16, 16, 32, 32]
    model = build(cfg)
    inputs, samples = generated_batch(model, (96, 128), batch_size=1)
    with torch.no_grad():
        (roi_outs, ) = model(inputs, samples, mode='tensor')
        preds = model(inputs, copy.deepcopy(samples), mode='predict')
    cls_score, bbox_pred, mask_pred = roi_outs
    # RoI heads on the RPN proposals (mask head on the first 100), 80 classes + background
    n = cls_score.shape[0]
    assert 0 < n <= 1000 and cls_score.shape == (n, 81) and bbox_pred.shape == (n, 320)
    assert mask_pred.shape == (min(n, 100), 80, 28, 28)
    inst = preds[0].pred_instances
    assert inst.masks.shape[1:] == (96, 128) and inst.bboxes.shape == (len(inst), 4)


def test_mask_rcnn_loss_step():
    """One training forward with ground truth: the losses of every head are finite."""
    cfg = load(DET[1])
    cfg.model.backbone.arch = TINY_PVT
    cfg.model.neck.in_channels = [16, 16, 32, 32]
    model = build(cfg).train()
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
    inputs, samples = generated_batch(model, (64, 64))[0], samples
    losses = model(inputs, samples, mode='loss')
    for k in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        v = losses[k]
        v = sum(v) if isinstance(v, (list, tuple)) else v
        assert torch.isfinite(v).all(), k
