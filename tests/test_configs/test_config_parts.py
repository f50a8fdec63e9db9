"""The smoke configs (configs/_tiny_) and the PVTv2 baselines take their shared parts from
mmdyn.utils.config_parts: the resolved configs hold exactly those parts, no helper name leaks
into them, and they survive mmengine's dump and reload."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = sorted(glob.glob(osp.join(ROOT, 'configs', '_tiny_', '*.py')))
PVTV2 = sorted(glob.glob(osp.join(ROOT, 'configs', 'baselines', '*pvtv2*.py')))


@pytest.mark.parametrize('path', TINY + PVTV2, ids=osp.basename)
def test_no_helper_leaks_and_dump_round_trip(path):
    cfg = Config.fromfile(path)
    assert not [k for k in cfg if k.startswith('_')]
    again = Config.fromstring(cfg.pretty_text, '.py')
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize('path', TINY, ids=osp.basename)
def test_tiny_runs(path):
    cfg = Config.fromfile(path)
    assert cfg.train_cfg.max_iters == 4 and cfg.train_cfg.val_interval == 4
    assert cfg.default_hooks.checkpoint.interval == 4
    assert cfg.randomness.seed == 0 and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.train_dataloader.dataset.pipeline == cfg.train_pipeline
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_pipeline
    assert cfg.test_dataloader == cfg.val_dataloader
    assert cfg.train_dataloader.dataset.data_root == cfg.data_root
    assert cfg.val_evaluator[-1] == dict(type='mmdyn.ComplexityMetric')
    assert cfg.test_evaluator == cfg.val_evaluator
    if 'ade20k' in path:
        crop = [t for t in cfg.train_pipeline if t.type == 'RandomCrop'][0]
        assert crop.crop_size == cfg.crop_size == (64, 64)
    if 'coco' in path:
        assert cfg.val_evaluator[0].ann_file == \
            'data/toy_coco/annotations/instances_val2017.json'
        mask = 'maskrcnn' in path
        assert cfg.val_evaluator[0].metric == (['bbox', 'segm'] if mask else 'bbox')
        assert [t.with_mask for t in cfg.train_pipeline + cfg.test_pipeline
                if t.type == 'LoadAnnotations'] == [mask, mask]


@pytest.mark.parametrize('path', PVTV2, ids=osp.basename)
def test_pvtv2_backbone_swap(path):
    cfg = Config.fromfile(path)
    arch = osp.basename(path).split('pvtv2-')[1][:2]
    assert cfg.model.backbone == dict(
        type='mmdyn.PVTv2', arch=arch, drop_path_rate=0.1, out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      f'pvt_v2_{arch}.pth'))
    if 'retinanet' not in path:  # RetinaNet keeps mmdet's own PVTv2 recipe (lr 1e-4)
        assert cfg.optim_wrapper == dict(
            type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
            clip_grad=None)
