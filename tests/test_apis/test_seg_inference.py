"""mmseg's inference APIs (init_model / inference_model, MMSegInferencer) on the DGE, DiT, DoViT
and MSViT segmentation configs of configs/_tiny_, with checkpoints written by tools/train.py on
the generated ADE20K-layout data, run on real photographs (scikit-image)."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmdyn.apis import dynamic_records, enable_dynamic_records
from mmdyn.models.utils.records import get_record_collector

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = ['fpn_dge-pvt-tiny_toy-ade20k.py', 'fpn_dit-tiny_toy-ade20k.py',
       'setr_dovit-tiny_toy-ade20k.py', 'segmenter_msvit-tiny_toy-ade20k.py']


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """Two square photographs (BGR PNGs): the tiny test pipeline makes both 64 x 64, one window
    of the sliding-window configs."""
    from skimage import data
    d = tmp_path_factory.mktemp('photos')
    out = []
    for name, img in (('astronaut', data.astronaut()), ('coffee', data.coffee()[:, :400])):
        path = str(d / f'{name}.png')
        mmcv.imwrite(np.ascontiguousarray(img[..., ::-1]), path)
        out.append(path)
    return out


@pytest.fixture(scope='module', params=SEG)
def trained(request, train_tiny, toy_ade20k):
    return train_tiny(request.param, toy_ade20k)


def _diversify_gates(model, photo):
    """Make the gates of an untrained tiny model decide differently from image to image."""
    from mmseg.apis import inference_model
    bb = model.backbone
    if type(bb).__name__ == 'DoViT':  # a threshold inside the images' confidences
        inference_model(model, photo)
        bb.threshold = float(bb.last_confidences[0].median())
        return
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in list(bb.named_parameters()) + list(bb.named_buffers()):
            if 'gate' in name and p.dim() > 1 and p.is_floating_point():
                p.normal_(0, 3)


def test_init_model_and_inference_model(trained, photos):
    from mmseg.apis import inference_model, init_model
    from mmseg.structures import SegDataSample
    cfg, ckpt = trained
    model = init_model(cfg, ckpt, device='cpu')
    # mmseg's builder knows nothing of mmdyn: no records until they are switched on
    assert get_record_collector(model) is None
    assert 'dynamic_flops' not in inference_model(model, photos[0]).metainfo
    enable_dynamic_records(model)
    _diversify_gates(model, photos[0])
    flops = []
    for path in photos:
        out = inference_model(model, path)
        assert isinstance(out, SegDataSample)
        h, w = mmcv.imread(path).shape[:2]
        assert out.pred_sem_seg.data.shape == (1, h, w)
        assert out.seg_logits.data.shape == (150, h, w)
        rec = dynamic_records(out)
        # one backbone call per image (whole image, or one 64x64 window): the records are the
        # backbone's own for that image
        bb = model.backbone
        assert rec['flops'] == pytest.approx(float(bb.last_flops.sum()))
        assert rec['gflops'] == pytest.approx(rec['flops'] / 1e9)
        assert rec['static_flops'] > 0
        assert rec['stats']['kept_ratio'] == pytest.approx(float(bb.last_stats['kept_ratio']))
        assert 0 < rec['stats']['kept_ratio'] <= 1
        assert rec['stats']['flops_ratio'] == pytest.approx(rec['flops'] / rec['static_flops'])
        flops.append(rec['flops'])
    assert flops[0] != flops[1]  # the gates decided differently on the two photographs


def test_mmseg_inferencer(trained, photos):
    from mmseg.apis import MMSegInferencer
    from mmseg.structures import SegDataSample
    cfg, ckpt = trained
    inferencer = enable_dynamic_records(MMSegInferencer(model=cfg, weights=ckpt, device='cpu'))
    h, w = mmcv.imread(photos[1]).shape[:2]
    # the default dict result: the label map only (no metainfo, hence no records)
    res = inferencer(photos[1])
    assert set(res) == {'predictions', 'visualization'}
    assert res['predictions'].shape == (h, w)
    # return_datasamples=True: the SegDataSample, records in its metainfo
    sample = inferencer(photos[1], return_datasamples=True)
    assert isinstance(sample, SegDataSample)
    np.testing.assert_array_equal(sample.pred_sem_seg.data[0].numpy(), res['predictions'])
    rec = dynamic_records(sample)
    assert rec['flops'] == pytest.approx(float(inferencer.model.backbone.last_flops.sum()))
    assert 0 < rec['stats']['kept_ratio'] <= 1


@pytest.mark.parametrize('container', ['bare', 'model'])
def test_mmdyn_init_model_reads_any_container(tmp_path, train_tiny, toy_ade20k, container):
    """``mmdyn.apis.init_model`` on an mmseg config with a bare state dict (was: a KeyError
    'meta' from mmseg's init_model) or weights under ``model`` (was: nothing loaded): the
    checkpoint's weights, every one."""
    from mmdyn.apis import init_model
    cfg, ckpt = train_tiny(SEG[0], toy_ade20k)
    sd = torch.load(ckpt, map_location='cpu')['state_dict']
    path = tmp_path / 'w.pth'
    torch.save(sd if container == 'bare' else {'model': sd}, path)
    model = init_model(cfg, str(path), device='cpu')
    own = model.state_dict()
    assert set(sd) <= set(own)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k
