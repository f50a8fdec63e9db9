"""``mmdyn.apis.inference_model`` with odd inputs (issue 19, items 1-4 and 14): grayscale arrays,
arrays then paths, lists of differently sized images, tiny and thin images, and models of
several codebases in one process. Random weights (no checkpoint): these are input checks."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmdyn.apis import inference_model, init_model
from mmdyn.utils.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(REPO, 'configs', '_tiny_')


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def seg_model():
    torch.manual_seed(0)
    return init_model(osp.join(TINY, 'fpn_dge-pvt-tiny_toy-ade20k.py'))


@pytest.fixture(scope='module')
def det_model():
    torch.manual_seed(0)
    return init_model(osp.join(TINY, 'retinanet_dit-tiny_toy-coco.py'))


def test_seg_array_then_path_then_sizes(seg_model, tmp_path):
    first = seg_model.cfg.test_pipeline[0]['type']
    img = _img(48, 64)
    path = str(tmp_path / 'a.png')
    mmcv.imwrite(img, path)
    a = inference_model(seg_model, img)
    b = inference_model(seg_model, path)  # was KeyError: 'img' (pipeline rewritten in place)
    assert seg_model.cfg.test_pipeline[0]['type'] == first
    assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
    # a list of differently sized images, a small and a thin one among them
    imgs = [_img(33, 200, 1), _img(50, 40, 2), _img(1, 1, 3), _img(8, 8, 4)]
    outs = inference_model(seg_model, imgs)
    assert [tuple(o.pred_sem_seg.data.shape[-2:]) for o in outs] == [i.shape[:2] for i in imgs]
    # each equals the image alone
    alone = inference_model(seg_model, imgs[1])
    assert torch.equal(alone.pred_sem_seg.data, outs[1].pred_sem_seg.data)


def test_grayscale_and_bgra_arrays(det_model, seg_model):
    gray = _img(64, 80)[..., 0]
    g = inference_model(det_model, gray)  # was IndexError in the data preprocessor
    c = inference_model(det_model, np.repeat(gray[..., None], 3, axis=2))
    assert g.metainfo['ori_shape'] == (64, 80)
    assert torch.equal(g.pred_instances.scores, c.pred_instances.scores)
    bgra = np.concatenate([_img(40, 40), np.full((40, 40, 1), 255, np.uint8)], axis=2)
    s = inference_model(seg_model, bgra)
    t = inference_model(seg_model, bgra[..., :3].copy())
    assert torch.equal(s.pred_sem_seg.data, t.pred_sem_seg.data)
    with pytest.raises(ValueError) as e:
        inference_model(seg_model, np.zeros((4, 4, 2), np.uint8))
    assert isinstance(e.value, UserError)
    assert str(e.value) == ('image has shape (4, 4, 2); expected H x W (grayscale), H x W x 3 '
                            '(BGR) or H x W x 4 (BGRA)')
    with pytest.raises(ValueError, match=r'^image 1 /nowhere\.png does not exist$'):
        inference_model(seg_model, [_img(8, 8), '/nowhere.png'])


def test_models_of_several_codebases_in_one_process(det_model, seg_model):
    from mmengine.registry import DefaultScope, init_default_scope
    torch.manual_seed(0)
    cls_model = init_model(osp.join(TINY, 'dge-deit-tiny_toy-imagenet.py'))
    init_default_scope('mmdet')  # the process is in another codebase's scope
    img = _img(70, 90)
    for _ in range(2):  # alternating: each call pins its own codebase's scope
        c = inference_model(cls_model, img)  # ResizeEdge: mmpretrain's transform
        d = inference_model(det_model, img)
        s = inference_model(seg_model, img)
    assert c.pred_score.numel() == cls_model.head.num_classes
    assert d.metainfo['ori_shape'] == (70, 90)
    assert tuple(s.pred_sem_seg.data.shape[-2:]) == (70, 90)
    assert DefaultScope.get_current_instance().scope_name == 'mmdet'


def test_float_and_wide_integer_arrays(det_model, seg_model):
    """A float or wide-integer array of 0..255 values is the uint8 image it rounds to, for
    every codebase (mmpretrain's Pillow resize and OpenCV's take uint8 only); values outside
    0..255, or a float image of 0..1 values, are refused in one line."""
    torch.manual_seed(0)
    cls_model = init_model(osp.join(TINY, 'dvt-tiny_toy-imagenet.py'))
    img = _img(40, 56).clip(1, 254)  # room for the offsets below
    for model, read in ((cls_model, lambda r: r.pred_score),
                        (det_model, lambda r: r.pred_instances.scores),
                        (seg_model, lambda r: r.seg_logits.data)):
        want = read(inference_model(model, img))
        for arr in (img.astype(np.float32) + 0.3, img.astype(np.float16),
                    img.astype(np.int64), img.astype(np.float64) - 0.4):
            assert torch.equal(read(inference_model(model, arr)), want), arr.dtype
    for bad, msg in ((img.astype(np.int64) - 2, r'\(int64\) has values in \[-1, 252\]'),
                     (img.astype(np.float32) * 2, r'has values in \[2, 508\]'),
                     (np.full((8, 8, 3), np.nan, np.float32), r'values in \[nan, nan\]'),
                     (img.astype(np.float32) / 255, r'float image of values in \[0, 1\]')):
        with pytest.raises(UserError, match=msg):
            inference_model(seg_model, bad)
