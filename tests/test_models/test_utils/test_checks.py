"""Every loss weight is validated (>= 0) with a message naming the argument (issue 19, item 15)."""
import copy

import pytest

from mmdyn.models.backbones.dge import DGEPVT
from mmdyn.models.backbones.dit import DiT
from mmdyn.models.backbones.msvit import MSViT
from mmdyn.models.losses.budget_loss import BudgetLoss
from mmdyn.models.losses.distill_loss import PixelKLDistillLoss
from mmdyn.models.losses.gate_losses import (BatchShapingLoss, GeneralizedBatchShapingLoss,
                                             L0SparsityLoss)
from mmdyn.models.utils.checks import check_loss_weight
from mmdyn.utils.errors import UserError

PVT_ARCH = dict(embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
VIT_ARCH = dict(embed_dims=16, depth=1, num_heads=2, mlp_ratio=2)


def test_check_loss_weight():
    assert check_loss_weight(0) == 0.0 and check_loss_weight(2) == 2.0
    for bad in (-1, -1e-9, float('nan'), float('inf'), True, '1', None):
        with pytest.raises(ValueError) as e:
            check_loss_weight(bad, 'budget_weight', 'DGE')
        assert isinstance(e.value, UserError)
        assert str(e.value) == f'DGE: budget_weight must be a finite number >= 0, got {bad!r}'


CASES = [
    (DGEPVT, dict(arch=PVT_ARCH, budget_weight=-1), 'DGE: budget_weight'),
    (DiT, dict(arch=PVT_ARCH, budget_weight=-1), 'DiT: budget_weight'),
    (MSViT, dict(arch=VIT_ARCH, img_size=32, loss_weight=-1), 'MSViT: loss_weight'),
    (BudgetLoss, dict(loss_weight=-1), 'BudgetLoss: loss_weight'),
    (PixelKLDistillLoss, dict(loss_weight=-1), 'PixelKLDistillLoss: loss_weight'),
    (L0SparsityLoss, dict(loss_weight=-1), 'L0SparsityLoss: loss_weight'),
    (BatchShapingLoss, dict(loss_weight=-1), 'BatchShapingLoss: loss_weight'),
    (GeneralizedBatchShapingLoss, dict(prior_shape=(2, 2), loss_weight=-1),
     'GeneralizedBatchShapingLoss: loss_weight'),
    (GeneralizedBatchShapingLoss, dict(prior_shape=(2, 2), temperature_reg=-1),
     'GeneralizedBatchShapingLoss: temperature_reg'),
]


@pytest.mark.parametrize('cls, kwargs, name', CASES, ids=[c[2].replace(': ', '.') for c in CASES])
def test_negative_loss_weights_are_refused(cls, kwargs, name):
    with pytest.raises(ValueError) as e:
        cls(**copy.deepcopy(kwargs))
    assert str(e.value) == f'{name} must be a finite number >= 0, got -1'


def test_negative_dovit_aux_loss_weight_is_refused():
    from mmdyn.models.segmentors.dovit_segmentor import DoViTEncoderDecoder
    with pytest.raises(ValueError) as e:
        DoViTEncoderDecoder(backbone=dict(type='mmdyn.DoViT'), decode_head=dict(type='FCNHead'),
                            aux_loss_weight=-1)
    assert str(e.value) == ('DoViTEncoderDecoder: aux_loss_weight must be a finite number >= 0, '
                            'got -1')
