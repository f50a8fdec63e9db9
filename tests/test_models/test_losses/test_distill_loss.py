import math

import pytest
import torch

from mmdyn.models.losses import PixelKLDistillLoss


def _naive(student, teacher, valid, t):
    """Per-pixel KL written out with python floats."""
    b, k, h, w = student.shape
    total, count = 0.0, 0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if not valid[i, y, x]:
                    continue
                s = [student[i, c, y, x].item() / t for c in range(k)]
                q = [teacher[i, c, y, x].item() / t for c in range(k)]
                zs = math.log(sum(math.exp(v) for v in s))
                zq = math.log(sum(math.exp(v) for v in q))
                total += sum(math.exp(q[c] - zq) * ((q[c] - zq) - (s[c] - zs)) for c in range(k))
                count += 1
    return t * t * total / max(count, 1)


@pytest.mark.parametrize('t', [1.0, 2.0])
def test_value_against_loop(t):
    torch.manual_seed(0)
    s = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    te = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    valid = torch.rand(2, 3, 5) > 0.3
    loss = PixelKLDistillLoss(temperature=t, loss_weight=0.5)
    assert abs(loss(s, te, valid).item() - 0.5 * _naive(s, te, valid, t)) < 1e-10
    all_valid = torch.ones(2, 3, 5, dtype=torch.bool)
    assert abs(loss(s, te).item() - 0.5 * _naive(s, te, all_valid, t)) < 1e-10


def test_teacher_detached_and_student_gradient():
    torch.manual_seed(0)
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    te = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = PixelKLDistillLoss(temperature=2.0)
    loss(s, te).backward()
    assert te.grad is None
    # d/ds KL * T^2 / P = T * (softmax(s/T) - softmax(t/T)) / P per pixel
    ref = 2.0 * (torch.softmax(s.detach() / 2, 1) - torch.softmax(te.detach() / 2, 1)) / 4
    assert torch.allclose(s.grad, ref, atol=1e-6)


def test_zero_when_equal_and_no_valid_pixel():
    s = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = PixelKLDistillLoss()
    assert abs(loss(s, s.detach().clone()).item()) < 1e-6
    out = loss(s, torch.randn(2, 5, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_errors():
    loss = PixelKLDistillLoss()
    with pytest.raises(ValueError, match='temperature'):
        PixelKLDistillLoss(temperature=0)
    with pytest.raises(ValueError, match='must be equal'):
        loss(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match='valid_mask'):
        loss(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.ones(1, 2, 2).bool())
