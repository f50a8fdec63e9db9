"""The auxiliary-losses protocol: a dynamic backbone's losses reach an mmseg model's loss dict."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope

import mmdyn  # noqa: F401
from mmdyn.models.utils import DynamicModuleMixin
from mmdyn.models.utils.records import attach_dynamic_records, detach_dynamic_records


class _AuxBackbone(DynamicModuleMixin, nn.Module):

    def __init__(self):
        super().__init__()
        self.reset_dynamic_records()
        self.conv = nn.Conv2d(3, 8, 4, 4)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        y = self.conv(x) * self.scale
        b = x.shape[0]
        self.record_dynamic(torch.full((b, ), 10.), {'kept_ratio': torch.full((b, ), .5)})
        if self.training:
            self.set_aux_losses({'loss_budget': (self.scale - 0.2)**2})
        return [y, y[..., ::2, ::2], y[..., ::4, ::4], y[..., ::8, ::8]]


def _segmentor():
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
        backbone=dict(type='mmseg.ResNetV1c', depth=18),  # replaced below
        decode_head=dict(type='FPNHead', in_channels=[8] * 4, in_index=[0, 1, 2, 3],
                         feature_strides=[4, 8, 16, 32], channels=8, num_classes=3,
                         norm_cfg=dict(type='BN', requires_grad=True),
                         loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        test_cfg=dict(mode='whole'))
    from mmengine.config import ConfigDict
    model = MODELS.build(ConfigDict(cfg))
    model.backbone = _AuxBackbone()
    return model


def _batch():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 32, 32)))
        s.set_metainfo(dict(img_shape=(32, 32), pad_shape=(32, 32), ori_shape=(32, 32)))
        samples.append(s)
    return dict(inputs=[torch.rand(3, 32, 32) * 255 for _ in range(2)], data_samples=samples)


def test_aux_losses_are_added_to_the_loss_dict_and_trained():
    torch.manual_seed(0)
    model = _segmentor().train()
    attach_dynamic_records(model)
    data = model.data_preprocessor(_batch(), True)
    losses = model(**data, mode='loss')
    assert 'loss_budget' in losses
    assert losses['loss_budget'].item() == pytest.approx((0.5 - 0.2)**2)
    losses['loss_budget'].backward()
    assert model.backbone.scale.grad.item() == pytest.approx(2 * (0.5 - 0.2))
    assert model.backbone.aux_losses == {}  # consumed
    # predict mode writes records, adds no losses
    model.eval()
    out = model(**data, mode='predict')
    assert out[0].dynamic_flops == 10.0 and out[0].dynamic_stats['kept_ratio'] == 0.5


def test_unconsumed_aux_losses_warn():
    model = _segmentor().train()
    detach_dynamic_records(model)
    data = model.data_preprocessor(_batch(), True)
    model(**data, mode='loss')
    with pytest.warns(UserWarning, match='were not added to the loss'):
        model(**data, mode='loss')


def test_aux_loss_names_must_start_with_loss():
    with pytest.raises(ValueError, match='must start with "loss"'):
        _AuxBackbone().set_aux_losses({'budget': torch.tensor(1.)})
