"""mmpretrain's inference APIs (init_model, ImageClassificationInferencer) on the DGE-DeiT, MSViT
and DVT (early exit) classification configs of configs/_tiny_, with checkpoints written by
tools/train.py on the generated ImageNet-layout data, run on real photographs (scikit-image)."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmdyn.apis import dynamic_records, enable_dynamic_records, inference_model
from mmdyn.models.utils.dynamic import find_dynamic_modules
from mmdyn.models.utils.records import get_record_collector

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLS = ['dge-deit-tiny_toy-imagenet.py', 'msvit-tiny_toy-imagenet.py', 'dvt-tiny_toy-imagenet.py']


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    from skimage import data
    d = tmp_path_factory.mktemp('photos')
    out = []
    for name in ('astronaut', 'coffee', 'chelsea'):
        path = str(d / f'{name}.png')
        mmcv.imwrite(np.ascontiguousarray(getattr(data, name)()[..., ::-1]), path)
        out.append(path)
    return out


@pytest.fixture(scope='module', params=CLS)
def trained(request, train_tiny, toy_imagenet):
    return train_tiny(request.param, toy_imagenet)


def _diversify(model, inferencer, photos):
    """Make the decisions of an untrained tiny model differ between the photographs."""
    if type(model).__name__ == 'DVTClassifier':
        # exit-0 confidences with thresholds 0 (everyone leaves there), then a first threshold
        # between two of them: one photograph leaves at exit 0, another goes on to exit 1
        model.thresholds = [0.0, 0.0]
        conf = sorted(float(s.pred_score.max()) for s in
                      inferencer(photos, return_datasamples=True))
        assert conf[0] < conf[-1]
        model.thresholds = [(conf[0] + conf[-1]) / 2, 0.0]
        return
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in list(model.backbone.named_parameters()) + \
                list(model.backbone.named_buffers()):
            if 'gate' in name and p.dim() > 1 and p.is_floating_point():
                p.normal_(0, 3)
    if type(model.backbone).__name__ == 'MSViT':
        # only four 32x32 regions at 64x64: a gate driven by the content (random input layer,
        # no position term), its bias moved so that the first photograph's median region sits
        # on the decision boundary
        tok = model.backbone.tokenizer
        with torch.no_grad():
            tok.pos_embed.zero_()
            for name, p in tok.named_parameters():
                if p.dim() > 1 and name != 'pos_embed':
                    p.normal_(0, 1)
        logits = []
        handle = tok.gate.proj.register_forward_hook(
            lambda m, a, out: logits.append(out.detach().flatten()))
        inferencer(photos[0])
        handle.remove()
        with torch.no_grad():
            tok.gate.proj[-1].bias -= float(logits[0].median())


def test_image_classification_inferencer(trained, photos):
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.structures import DataSample
    cfg, ckpt = trained
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=ckpt, device='cpu')
    model = inferencer.model
    assert get_record_collector(model) is None  # mmpretrain's builder does not switch them on
    enable_dynamic_records(inferencer)
    # the default dict result: scores and classes only (no metainfo, hence no records)
    plain = inferencer(photos[0])[0]
    assert set(plain) == {'pred_scores', 'pred_label', 'pred_score', 'pred_class'}
    assert plain['pred_scores'].shape == (1000, )
    _diversify(model, inferencer, photos)
    samples = inferencer(photos, return_datasamples=True)  # batch_size 1: one forward each
    assert len(samples) == 3 and all(isinstance(s, DataSample) for s in samples)
    (dyn, ) = find_dynamic_modules(model)
    flops = []
    for s in samples:
        assert s.pred_score.shape == (1000, ) and s.pred_label.shape == (1, )
        assert float(s.pred_score.sum()) == pytest.approx(1.0, abs=1e-4)
        rec = dynamic_records(s)
        assert 0 < rec['flops'] and rec['static_flops'] > 0
        assert rec['stats']['flops_ratio'] == pytest.approx(rec['flops'] / rec['static_flops'])
        if type(model).__name__ == 'DVTClassifier':
            # early exit: the image's FLOPs are those of the exits it ran through
            assert rec['flops'] == pytest.approx(sum(model.exit_flops()[:s.exit_index + 1]))
            assert rec['stats'][f'exit{s.exit_index}_ratio'] == 1.0
        else:
            assert 0 < rec['stats']['kept_ratio'] <= 1
        flops.append(rec['flops'])
    # the last forward was the last photograph's: the records are its dynamic module's own
    assert flops[-1] == pytest.approx(float(dyn.last_flops.sum()))
    assert len(set(flops)) > 1
    if type(model).__name__ == 'DVTClassifier':
        assert {s.exit_index for s in samples} >= {0, 1}


def test_init_model_then_inference(trained, photos):
    import mmpretrain.apis
    from mmpretrain.structures import DataSample
    cfg, ckpt = trained
    model = mmpretrain.apis.init_model(cfg, ckpt, device='cpu')
    assert get_record_collector(model) is None
    # mmdyn.apis.inference_model: mmpretrain's inferencer on the model, records switched on
    # (mmpretrain.apis.inference_model itself only serves models of mmpretrain's model index)
    sample = inference_model(model, photos[1])
    assert isinstance(sample, DataSample) and sample.pred_score.shape == (1000, )
    (dyn, ) = find_dynamic_modules(model)
    rec = dynamic_records(sample)
    assert rec['flops'] == pytest.approx(float(dyn.last_flops.sum()))
    assert rec['gflops'] == pytest.approx(rec['flops'] / 1e9)
    with pytest.raises(NotImplementedError):
        mmpretrain.apis.inference_model(model, photos[1])
