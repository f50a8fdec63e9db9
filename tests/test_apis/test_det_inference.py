"""mmdet's inference APIs (init_detector / inference_detector, DetInferencer) on the DGE
(Mask R-CNN) and DiT (RetinaNet) detection configs of configs/_tiny_, with checkpoints written by
tools/train.py on the generated COCO-layout data, run on real photographs (scikit-image)."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmdyn.apis import dynamic_records, enable_dynamic_records, init_model
from mmdyn.models.utils.records import get_record_collector

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = ['maskrcnn_dge-pvt-tiny_toy-coco.py', 'retinanet_dit-tiny_toy-coco.py']


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    from skimage import data
    d = tmp_path_factory.mktemp('photos')
    out = []
    for name in ('astronaut', 'chelsea'):
        path = str(d / f'{name}.png')
        mmcv.imwrite(np.ascontiguousarray(getattr(data, name)()[..., ::-1]), path)
        out.append(path)
    return out


@pytest.fixture(scope='module', params=DET)
def trained(request, train_tiny, toy_coco):
    return train_tiny(request.param, toy_coco)


def _check_instances(sample, h, w, masks):
    inst = sample.pred_instances
    n = len(inst)
    assert n > 0  # the smoke configs keep every box (score_thr 0)
    assert inst.bboxes.shape == (n, 4) and inst.scores.shape == (n, ) \
        and inst.labels.shape == (n, )
    assert float(inst.bboxes[:, 2].max()) <= w + 1e-3 and float(inst.bboxes[:, 3].max()) <= h + 1e-3
    if masks:
        assert inst.masks.shape == (n, h, w)


def test_init_detector_and_inference_detector(trained, photos):
    from mmdet.apis import inference_detector, init_detector
    from mmdet.structures import DetDataSample
    cfg, ckpt = trained
    model = init_detector(cfg, ckpt, device='cpu')
    assert get_record_collector(model) is None  # mmdet's builder does not switch them on
    enable_dynamic_records(model)
    bb = model.backbone
    flops = []
    for i, path in enumerate(photos):
        if i == 1:  # different gate decisions for the second photograph
            torch.manual_seed(0)
            with torch.no_grad():
                for name, p in list(bb.named_parameters()) + list(bb.named_buffers()):
                    if 'gate' in name and p.dim() > 1 and p.is_floating_point():
                        p.normal_(0, 3)
        out = inference_detector(model, path)
        assert isinstance(out, DetDataSample)
        h, w = mmcv.imread(path).shape[:2]
        assert tuple(out.ori_shape) == (h, w)
        _check_instances(out, h, w, masks='maskrcnn' in cfg)
        rec = dynamic_records(out)
        assert rec['flops'] == pytest.approx(float(bb.last_flops.sum()))
        assert rec['static_flops'] > 0
        assert rec['stats']['kept_ratio'] == pytest.approx(float(bb.last_stats['kept_ratio']))
        assert 0 < rec['stats']['kept_ratio'] <= 1
        flops.append(rec['flops'])
    assert flops[0] != flops[1]


def test_det_inferencer_and_mmdyn_init_model(trained, photos):
    from mmdet.apis import DetInferencer, inference_detector
    from mmdet.structures import DetDataSample
    cfg, ckpt = trained
    inferencer = enable_dynamic_records(DetInferencer(model=cfg, weights=ckpt, device='cpu',
                                                      show_progress=False))
    res = inferencer(photos[0], return_datasamples=True, no_save_vis=True)
    (sample, ) = res['predictions']
    assert isinstance(sample, DetDataSample)
    h, w = mmcv.imread(photos[0]).shape[:2]
    _check_instances(sample, h, w, masks='maskrcnn' in cfg)
    rec = dynamic_records(sample)
    assert rec['flops'] == pytest.approx(float(inferencer.model.backbone.last_flops.sum()))
    # the default dict result: boxes, labels, scores; no metainfo, hence no records
    plain = inferencer(photos[0], no_save_vis=True)['predictions'][0]
    assert set(plain) >= {'bboxes', 'labels', 'scores'} and 'dynamic_flops' not in plain
    np.testing.assert_allclose(np.array(plain['bboxes']), sample.pred_instances.bboxes.numpy(),
                               atol=1e-2)
    # mmdyn.apis.init_model: mmdet's builder with the records on, same weights, same records
    model = init_model(cfg, ckpt, device='cpu')
    again = inference_detector(model, photos[0])
    assert dynamic_records(again)['flops'] == pytest.approx(rec['flops'])
    torch.testing.assert_close(again.pred_instances.bboxes, sample.pred_instances.bboxes)
