import pytest
import torch

from mmdyn.models.losses import BudgetLoss
from mmdyn.registry import MODELS


def test_value_and_gradient():
    loss = BudgetLoss(target=0.5, loss_weight=2.0)
    ratio = torch.tensor([0.3, 0.7, 0.9], requires_grad=True)
    out = loss(ratio)
    # 2 * mean(0.04, 0.04, 0.16)
    assert torch.allclose(out, torch.tensor(2.0 * 0.24 / 3))
    out.backward()
    assert torch.allclose(ratio.grad, 2.0 * 2 * (ratio.detach() - 0.5) / 3)


def test_scalar_ratio_and_schedulable_target():
    loss = BudgetLoss(target=0.4)
    assert torch.allclose(loss(torch.tensor(0.6)), torch.tensor(0.04))
    loss.target = 0.6  # what a schedule hook does
    assert loss(torch.tensor(0.6)).item() == 0.0
    assert torch.allclose(loss(torch.tensor(0.6), target=0.5), torch.tensor(0.01))


def test_registry_and_errors():
    loss = MODELS.build(dict(type='BudgetLoss', target=0.25, loss_weight=3.0))
    assert isinstance(loss, BudgetLoss) and loss.loss_name == 'loss_budget'
    assert torch.allclose(loss(torch.tensor([0.75])), torch.tensor(0.75))
    with pytest.raises(ValueError, match='target'):
        BudgetLoss(target=-0.1)
    with pytest.raises(ValueError, match='cost_ratio'):
        loss(torch.zeros(2, 2))
    with pytest.raises(ValueError, match='cost_ratio'):
        loss(torch.zeros(0))
