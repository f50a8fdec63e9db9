import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmdyn.models.losses import (BatchShapingLoss, GeneralizedBatchShapingLoss, L0SparsityLoss,
                                 batch_shaping_loss, beta_cdf, normal_cdf,
                                 relaxed_bernoulli_cdf)
from mmdyn.models.losses.gate_losses import BetaCDFTable
from mmdyn.registry import MODELS


def _bas_ref(rows, cdf):
    """Batch-shaping in numpy: rows [R, n] -> mean_r 1/n sum_i (i/(n+1) - F(x_(i)))^2."""
    rows = np.sort(np.asarray(rows, dtype=np.float64), axis=1)
    n = rows.shape[1]
    ecdf = np.arange(1, n + 1) / (n + 1)
    return float(np.mean(np.sum((ecdf - cdf(rows))**2, axis=1) / n))


# ------------------------------------------------------------------ prior CDFs


@pytest.mark.parametrize('ab', [(0.6, 0.4), (2.0, 6.0), (0.5, 0.5), (3.0, 7.0), (20.0, 1.5)])
def test_beta_cdf_against_scipy(ab):
    x = torch.linspace(0, 1, 201, dtype=torch.float64)
    ref = stats.beta.cdf(x.numpy(), *ab)
    assert np.abs(beta_cdf(x, *ab).numpy() - ref).max() < 1e-10
    table = BetaCDFTable(*ab)
    xr = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert np.abs(table(xr).numpy() - stats.beta.cdf(xr.numpy(), *ab)).max() < 2e-4


def test_beta_table_gradient_is_density():
    table = BetaCDFTable(2.0, 6.0)
    x = torch.tensor([0.1, 0.25, 0.4, 0.6], requires_grad=True)
    table(x).sum().backward()
    assert np.allclose(x.grad.numpy(), stats.beta.pdf(x.detach().numpy(), 2.0, 6.0), rtol=2e-2)
    # unbounded density (a < 1): finite gradient at the ends
    t2 = BetaCDFTable(0.6, 0.4)
    x = torch.tensor([0.0, 1e-9, 1.0], requires_grad=True)
    t2(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_relaxed_bernoulli_cdf_against_sampling():
    torch.manual_seed(0)
    prob, temp = 0.3, 0.5
    u = torch.rand(200000, dtype=torch.float64)
    logistic = torch.log(u) - torch.log1p(-u)
    samples = torch.sigmoid((math.log(prob / (1 - prob)) + logistic) / temp)
    xs = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    empirical = (samples[None] <= xs[:, None]).double().mean(1)
    assert torch.allclose(relaxed_bernoulli_cdf(xs, prob, temp), empirical, atol=5e-3)
    # P(X > 0.5) = prob
    assert abs(1 - relaxed_bernoulli_cdf(torch.tensor(0.5), prob, temp).item() - prob) < 1e-6


def test_normal_cdf_against_scipy():
    x = torch.linspace(-1, 2, 50, dtype=torch.float64)
    assert np.allclose(normal_cdf(x, 0.3, 0.2).numpy(), stats.norm.cdf(x.numpy(), 0.3, 0.2))


# ------------------------------------------------------------------ BaS


def test_batch_shaping_value_and_analytic_gradient():
    torch.manual_seed(0)
    x = torch.rand(3, 9, dtype=torch.float64, requires_grad=True)
    loss = batch_shaping_loss(x, lambda v: normal_cdf(v, 0.4, 0.2))
    ref = _bas_ref(x.detach(), lambda v: stats.norm.cdf(v, 0.4, 0.2))
    assert abs(loss.item() - ref) < 1e-12
    loss.backward()
    # d/dx_(i) = -2 / (R n) * (i/(n+1) - F(x_(i))) * f(x_(i))
    xs = x.detach().numpy()
    ranks = xs.argsort(1).argsort(1) + 1
    ecdf = ranks / 10
    grad = -2 / (3 * 9) * (ecdf - stats.norm.cdf(xs, 0.4, 0.2)) * stats.norm.pdf(xs, 0.4, 0.2)
    assert np.allclose(x.grad.numpy(), grad, atol=1e-12)


def test_bas_module_flat_and_per_position():
    torch.manual_seed(0)
    p = torch.rand(6, 2, 3)
    flat = BatchShapingLoss(prior=dict(type='Beta', alpha=2.0, beta=6.0), loss_weight=2.0)
    ref = _bas_ref(p.reshape(1, -1), lambda v: stats.beta.cdf(v, 2.0, 6.0))
    assert abs(flat(p).item() - 2.0 * ref) < 1e-4
    per = BatchShapingLoss(prior=dict(type='RelaxedBernoulli', prob=0.3, temperature=0.5),
                           per_position=True)
    rb = lambda v: 1 / (1 + np.exp(-(0.5 * np.log(v / (1 - v)) - np.log(0.3 / 0.7))))  # noqa
    ref = np.mean([_bas_ref(p.reshape(6, -1)[:, j][None], rb) for j in range(6)])
    assert abs(per(p).item() - ref) < 1e-6
    q = p.clone().requires_grad_()
    flat(q).backward()
    assert q.grad.abs().sum() > 0


def test_ties_and_saturated_values_give_no_nan():
    for prior in (dict(type='Beta', alpha=0.6, beta=0.4),
                  dict(type='RelaxedBernoulli', prob=0.3, temperature=0.3),
                  dict(type='Normal', mean=0.5, std=0.1)):
        for ties in (False, True):
            loss = BatchShapingLoss(prior=prior, per_position=True, handle_ties=ties)
            for x in (torch.full((8, 4), 0.3), torch.zeros(8, 4), torch.ones(8, 4),
                      torch.tensor([[0.0, 1.0]] * 4)):
                x = x.clone().requires_grad_()
                out = loss(x)
                out.backward()
                assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_handle_ties_uses_shared_ecdf():
    x = torch.tensor([[0.2, 0.5, 0.2]], dtype=torch.float64)
    f = lambda v: normal_cdf(v, 0.4, 0.2)  # noqa
    fv = stats.norm.cdf([0.2, 0.2, 0.5], 0.4, 0.2)
    tied = ((0.5 - fv[0])**2 * 2 + (0.75 - fv[2])**2) / 3
    plain = ((0.25 - fv[0])**2 + (0.5 - fv[1])**2 + (0.75 - fv[2])**2) / 3
    assert abs(batch_shaping_loss(x, f, handle_ties=True).item() - tied) < 1e-12
    assert abs(batch_shaping_loss(x, f).item() - plain) < 1e-12


def test_valid_mask_equals_dropping_samples():
    torch.manual_seed(0)
    x = torch.rand(2, 6, dtype=torch.float64)
    valid = torch.tensor([[True, False, True, True, False, True], [False] * 6])
    f = lambda v: normal_cdf(v, 0.5, 0.3)  # noqa
    out = batch_shaping_loss(x, f, valid)
    ref = batch_shaping_loss(x[0, valid[0]][None], f)
    assert abs(out.item() - ref.item()) < 1e-12
    assert batch_shaping_loss(x, f, torch.zeros(2, 6, dtype=torch.bool)).item() == 0.0


# ------------------------------------------------------------------ L0


def test_l0_values():
    p = torch.tensor([[0.2, 0.4], [0.9, 0.7]], requires_grad=True)
    hinge = L0SparsityLoss(target=0.5, loss_weight=2.0)
    assert torch.allclose(hinge(p), torch.tensor(2.0 * (0.0 + 0.3) / 2))
    hinge(p).backward()
    assert torch.allclose(p.grad, torch.tensor([[0.0, 0.0], [0.5, 0.5]]))
    square = L0SparsityLoss(target=0.5, mode='square')
    assert torch.allclose(square(p), torch.tensor((0.04 + 0.09) / 2))
    assert torch.allclose(L0SparsityLoss()(p), p.mean())
    valid = torch.tensor([[True, False], [True, True]])
    assert torch.allclose(L0SparsityLoss(target=0.1)(p, valid),
                          torch.tensor(((0.2 - 0.1) + (0.8 - 0.1)) / 2))


# ------------------------------------------------------------------ gBaS


def _gbas_ref(probs, theta, temp, target, std):
    """Independent numpy gBaS: per-position RB priors (gate values clipped to [1e-3, 1 - 1e-3],
    as the authors' code) + Gaussian hyperprior N(target, std^2) on sigmoid(theta)."""
    b = probs.shape[0]
    rows = probs.reshape(b, -1).T
    th = theta.reshape(-1)
    total = 0.0
    for j in range(rows.shape[0]):
        def rb(v):
            v = np.clip(v, 1e-3, 1 - 1e-3)
            return 1 / (1 + np.exp(-(temp * np.log(v / (1 - v)) - th[j])))
        total += _bas_ref(rows[j][None], rb)
    means = 1 / (1 + np.exp(-th))
    hyper = _bas_ref(means[None], lambda v: stats.norm.cdf(v, target, std))
    return total / rows.shape[0] + hyper


def test_gbas_value_and_gradients():
    torch.manual_seed(0)
    loss = GeneralizedBatchShapingLoss((3, 4), target=0.25, temperature=0.3,
                                       hyperprior_std=0.05, loss_weight=1.5)
    with torch.no_grad():
        loss.prior_logits.normal_(0, 1)
    probs = torch.rand(5, 3, 4, dtype=torch.float64, requires_grad=True)
    out = loss(probs)
    ref = _gbas_ref(probs.detach().numpy(), loss.prior_logits.detach().double().numpy(), 0.3,
                    0.25, 0.05)
    assert abs(out.item() - 1.5 * ref) < 1e-6
    out.backward()
    assert torch.isfinite(probs.grad).all() and probs.grad.abs().sum() > 0
    assert loss.prior_logits.grad is not None and loss.prior_logits.grad.abs().sum() > 0
    # [B, N] + hw_shape is the same thing
    assert torch.allclose(loss(probs.detach().reshape(5, 12), hw_shape=(3, 4)), out.detach())


def test_gbas_hyperprior_at_default_init_and_target_schedule():
    loss = GeneralizedBatchShapingLoss((2, 3), target=0.3)
    assert torch.allclose(torch.sigmoid(loss.prior_logits), torch.full((2, 3), 0.3))
    # all prior means at the hyperprior mean: F = 1/2, ecdf i/7
    hyper = sum((i / 7 - 0.5)**2 for i in range(1, 7)) / 6
    probs = torch.rand(4, 2, 3, dtype=torch.float64)
    rows_only = _gbas_ref(probs.numpy(), loss.prior_logits.detach().double().numpy(), 0.3, 0.3,
                          0.1) - _bas_ref(np.full((1, 6), 0.3),
                                          lambda v: stats.norm.cdf(v, 0.3, 0.1))
    assert abs(loss(probs).item() - (rows_only + hyper)) < 1e-6
    loss.target = 0.6  # schedulable: the hyperprior moves
    moved = _gbas_ref(probs.numpy(), loss.prior_logits.detach().double().numpy(), 0.3, 0.6, 0.1)
    assert abs(loss(probs).item() - moved) < 1e-6


def test_gbas_center_init_and_resized_grid():
    loss = GeneralizedBatchShapingLoss((5, 5), target=0.3, hyperprior_std=0.1,
                                       center_init=True)
    p = torch.sigmoid(loss.prior_logits.detach())
    assert p[2, 2] == p.max() and p[0, 0] == p.min()
    assert torch.allclose(p, p.flip(0)) and torch.allclose(p, p.t())
    assert abs(p.mean().item() - 0.3) < 0.1
    # another input grid: bilinearly resized priors, loss still trains them
    theta, temp = loss.priors((10, 10))
    assert theta.shape == (10, 10) and temp == 0.3
    assert torch.allclose(theta[0, 0], loss.prior_logits[0, 0])
    probs = torch.rand(2, 10, 10, requires_grad=True)
    out = loss(probs)
    out.backward()
    assert torch.isfinite(out) and loss.prior_logits.grad.abs().sum() > 0


def test_gbas_learned_temperature():
    probs = torch.rand(4, 2, 2)
    fixed = GeneralizedBatchShapingLoss((2, 2), target=0.4)
    learned = GeneralizedBatchShapingLoss((2, 2), target=0.4, learn_temperature=True,
                                          temperature_reg=0.1)
    assert torch.allclose(torch.sigmoid(learned.temperature_logits), torch.full((2, 2), 0.3))
    out = learned(probs)
    assert abs(out.item() - fixed(probs).item() - 0.1 * 0.3) < 1e-6
    out.backward()
    assert learned.temperature_logits.grad.abs().sum() > 0


def test_no_host_round_trip_in_forward(monkeypatch):
    losses = [
        (GeneralizedBatchShapingLoss((2, 3), target=0.3, learn_temperature=True),
         (torch.rand(4, 2, 3), )),
        (BatchShapingLoss(), (torch.rand(4, 6), torch.rand(4, 6) > 0.2)),
        (BatchShapingLoss(handle_ties=True, per_position=True), (torch.rand(4, 6), )),
        (L0SparsityLoss(0.2), (torch.rand(4, 6), )),
    ]

    def forbid(*args, **kwargs):
        raise AssertionError('host round trip')

    for name in ('item', 'tolist', 'numpy', '__bool__', '__float__', '__int__', 'cpu'):
        monkeypatch.setattr(torch.Tensor, name, forbid)
    for loss, args in losses:
        out = loss(*args)
    monkeypatch.undo()
    assert torch.isfinite(out)


def test_registry_and_errors():
    assert isinstance(MODELS.build(dict(type='GeneralizedBatchShapingLoss', prior_shape=(2, 2))),
                      GeneralizedBatchShapingLoss)
    assert isinstance(MODELS.build(dict(type='L0SparsityLoss')), L0SparsityLoss)
    with pytest.raises(ValueError, match='prior type'):
        BatchShapingLoss(prior=dict(type='Gamma'))
    with pytest.raises(ValueError, match='Beta parameters'):
        BatchShapingLoss(prior=dict(type='Beta', alpha=0.0, beta=1.0))
    with pytest.raises(ValueError, match='target'):
        GeneralizedBatchShapingLoss((2, 2), target=1.0)
    with pytest.raises(ValueError, match='prior_shape'):
        GeneralizedBatchShapingLoss((0, 2))
    with pytest.raises(ValueError, match='hyperprior_std'):
        GeneralizedBatchShapingLoss((2, 2), hyperprior_std=0.0)
    with pytest.raises(ValueError, match='hw_shape'):
        GeneralizedBatchShapingLoss((2, 2))(torch.rand(3, 5))
    with pytest.raises(ValueError, match='mode'):
        L0SparsityLoss(mode='abs')
    with pytest.raises(ValueError, match='samples'):
        batch_shaping_loss(torch.rand(5), lambda v: v)


# ------------------------------------------------------------------ the authors' constants
# (Qualcomm-AI-research/batchshaping: cdf_relaxedbernoulli.py clips x to [1e-3, 1 - 1e-3];
# cdf_normal.py divides by sqrt(2) * std, i.e. its second parameter is a standard deviation)


def test_relaxed_bernoulli_clamp_hand_value():
    """RB(1/2, T = 1/2) at x = 0 and 1: with the clamp at 1e-3, logit(1e-3) = -ln 999, so
    F(0) = sigmoid(-ln(999) / 2) = 1 / (1 + sqrt(999)) and F(1) = sqrt(999) / (1 + sqrt(999));
    a flattened BaS row [0, 1] (ecdf 1/3, 2/3) gives (1/3 - 1 / (1 + sqrt(999)))^2 for both
    samples. (The former 1e-4 clamp gives (1/3 - 1 / (1 + sqrt(9999)))^2 = 0.1046.)"""
    f0 = 1 / (1 + math.sqrt(999))  # 0.0306686...
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(relaxed_bernoulli_cdf(x, 0.5, 0.5),
                               torch.tensor([f0, 1 - f0], dtype=torch.float64))
    expected = (1 / 3 - f0)**2  # 0.0916061...
    assert abs(expected - 0.0916061) < 1e-6
    bas = BatchShapingLoss(prior=dict(type='RelaxedBernoulli', prob=0.5, temperature=0.5))
    assert abs(bas(torch.tensor([[0.0], [1.0]], dtype=torch.float64)).item() - expected) < 1e-12
    # a gate value between the former and the present clamp gets no gradient
    g = torch.tensor([[5e-4], [0.5]], dtype=torch.float64, requires_grad=True)
    bas(g).backward()
    assert g.grad[0, 0] == 0 and g.grad[1, 0] != 0
    # the former clamp stays reachable
    old = BatchShapingLoss(prior=dict(type='RelaxedBernoulli', prob=0.5, temperature=0.5,
                                      eps=1e-4))
    f0_old = 1 / (1 + math.sqrt(9999))
    assert abs(old(torch.tensor([[0.0], [1.0]], dtype=torch.float64)).item()
               - (1 / 3 - f0_old)**2) < 1e-12


def test_gbas_clamp_hand_value():
    """gBaS on one position with prior logit 0 (p = target = 1/2): the hyperprior term is
    (1/2 - F_N(1/2))^2 = 0 and the row term is the RB value above."""
    loss = GeneralizedBatchShapingLoss((1, 1), target=0.5, temperature=0.5)
    assert loss.clamp_eps == 1e-3
    out = loss(torch.tensor([[[0.0]], [[1.0]]], dtype=torch.float64))
    assert abs(out.item() - (1 / 3 - 1 / (1 + math.sqrt(999)))**2) < 1e-7


def test_gbas_hyperprior_is_a_standard_deviation():
    """Two positions whose prior means sit at target -/+ 0.1 (one standard deviation of the
    hyperprior N(0.5, 0.1^2)): F_N = Phi(-1), Phi(1) = 0.158655..., 0.841345...; ecdf 1/3, 2/3:
    hyperprior term ((1/3 - Phi(-1))^2 + (2/3 - Phi(1))^2) / 2 = (1/3 - Phi(-1))^2. One sample
    per position, placed at its prior's median x = sigmoid(theta / T) (F = 1/2 = ecdf), makes
    the row term 0."""
    phi_m1 = 0.15865525393145707  # standard normal CDF at -1 (tables)
    loss = GeneralizedBatchShapingLoss((1, 2), target=0.5, temperature=0.3, hyperprior_std=0.1)
    theta = torch.tensor([[math.log(0.4 / 0.6), math.log(0.6 / 0.4)]])
    with torch.no_grad():
        loss.prior_logits.copy_(theta)
    x = torch.sigmoid(theta.double() / 0.3)[None]  # [B=1, 1, 2]
    expected = (1 / 3 - phi_m1)**2  # 0.0305124...
    assert abs(loss(x).item() - expected) < 1e-6
    # read as a variance (std 0.316), the same means would give (1/3 - Phi(-0.316))^2 ~ 0.0018
    assert abs(loss(x).item() - 0.0018) > 0.02
    # the default is std 0.1, and the old argument name is refused with the mapping
    assert GeneralizedBatchShapingLoss((1, 2)).hyperprior_std == 0.1
    with pytest.raises(TypeError, match='hyperprior_std'):
        GeneralizedBatchShapingLoss((1, 2), hyperprior_variance=0.1)
