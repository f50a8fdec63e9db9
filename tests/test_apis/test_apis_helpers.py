"""mmdyn.apis helpers that need no trained model."""
import os.path as osp

import pytest
import torch.nn as nn
from mmengine.config import Config

from mmdyn.apis import codebase_of, dynamic_records, enable_dynamic_records
from mmdyn.models.utils.records import get_record_collector

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.parametrize('name,codebase', [
    ('fpn_dge-pvt-tiny_toy-ade20k.py', 'mmseg'), ('setr_dovit-tiny_toy-ade20k.py', 'mmseg'),
    ('maskrcnn_dge-pvt-tiny_toy-coco.py', 'mmdet'), ('retinanet_dit-tiny_toy-coco.py', 'mmdet'),
    ('dvt-tiny_toy-imagenet.py', 'mmpretrain'), ('msvit-tiny_toy-imagenet.py', 'mmpretrain')])
def test_codebase_of_tiny_configs(name, codebase):
    assert codebase_of(osp.join(REPO, 'configs', '_tiny_', name)) == codebase


def test_codebase_of_without_default_scope():
    assert codebase_of(Config(dict(model=dict(type='mmdyn.DVTClassifier')))) == 'mmpretrain'
    assert codebase_of(Config(dict(model=dict(type='mmdyn.DoViTEncoderDecoder')))) == 'mmseg'
    assert codebase_of(Config(dict(model=dict(type='mmdet.RetinaNet')))) == 'mmdet'
    with pytest.raises(ValueError, match='cannot tell the codebase'):
        codebase_of(Config(dict(model=dict(type='EncoderDecoder'))))
    with pytest.raises(FileNotFoundError):
        codebase_of('configs/nope.py')


def test_enable_dynamic_records_inputs():
    lin = nn.Linear(2, 2)
    assert enable_dynamic_records(lin) is lin  # no dynamic module: left as it is
    assert get_record_collector(lin) is None

    class Holder:
        model = nn.Linear(2, 2)

    h = Holder()
    assert enable_dynamic_records(h) is h
    with pytest.raises(TypeError):
        enable_dynamic_records(object())


def test_dynamic_records_reads_metainfo():
    from mmengine.structures import BaseDataElement
    s = BaseDataElement(metainfo=dict(dynamic_flops=3e6, dynamic_static_flops=4e6,
                                      dynamic_stats=dict(kept_ratio=0.5)))
    rec = dynamic_records(s)
    assert rec == dict(flops=3e6, static_flops=4e6, stats=dict(kept_ratio=0.5), gflops=3e-3)
    assert dynamic_records(BaseDataElement()) is None
