import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.models.layers.gates import (GumbelSigmoidGate, GumbelSoftmaxGate, binary_eval,
                                       categorical_eval, gumbel_sigmoid_st, gumbel_softmax_st,
                                       sample_gumbel, sample_logistic, straight_through)
from mmdyn.registry import MODELS


def _gumbel(shape, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(u))).float()


@pytest.mark.parametrize('tau', [1.0, 0.3])
def test_gumbel_softmax_st_forward_onehot_and_soft_gradient(tau):
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 5, requires_grad=True)
    noise = _gumbel((4, 6, 5), 1)
    w = torch.randn(4, 6, 5)
    out = gumbel_softmax_st(logits, tau, noise=noise)
    # forward: exact one-hot at argmax(logits + noise)
    expect = F.one_hot((logits.detach() + noise).argmax(-1), 5).float()
    assert torch.equal(out.decision, expect)
    z = (logits.detach() + noise) / tau
    soft_ref = torch.exp(z - z.logsumexp(-1, keepdim=True))
    assert torch.allclose(out.soft, soft_ref, atol=1e-6)
    # backward: gradient of the soft sample
    (g_hard, ) = torch.autograd.grad((out.decision * w).sum(), logits)
    leaf = logits.detach().clone().requires_grad_()
    (g_soft, ) = torch.autograd.grad((F.softmax((leaf + noise) / tau, -1) * w).sum(), leaf)
    assert torch.allclose(g_hard, g_soft, atol=1e-7)
    assert g_hard.abs().sum() > 0


def test_gumbel_softmax_other_dim():
    logits = torch.randn(2, 3, 4)
    noise = _gumbel((2, 3, 4), 3)
    out = gumbel_softmax_st(logits, 1.0, dim=1, noise=noise)
    assert torch.equal(out.decision.sum(1), torch.ones(2, 4))
    assert torch.equal(out.decision.argmax(1), (logits + noise).argmax(1))


def test_gumbel_sigmoid_st_forward_binary_and_soft_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, requires_grad=True)
    g = torch.Generator().manual_seed(2)
    u = torch.rand(3, 7, generator=g)
    noise = torch.log(u) - torch.log1p(-u)
    w = torch.randn(3, 7)
    tau = 0.5
    out = gumbel_sigmoid_st(logits, tau, noise=noise)
    assert torch.equal(out.decision, ((logits.detach() + noise) > 0).float())
    assert torch.allclose(out.soft, 1 / (1 + torch.exp(-(logits.detach() + noise) / tau)))
    (g_hard, ) = torch.autograd.grad((out.decision * w).sum(), logits)
    s = out.soft.detach()
    assert torch.allclose(g_hard, w * s * (1 - s) / tau, atol=1e-7)


def test_straight_through_is_bit_exact():
    soft = torch.tensor([0.3, 0.7, 0.1 + 0.2], requires_grad=True)
    hard = torch.tensor([0.0, 1.0, 1.0])
    out = straight_through(soft, hard)
    assert torch.equal(out, hard)
    out.backward(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(soft.grad, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match='shapes differ'):
        straight_through(soft, hard[:2])


def test_sampling_frequencies_match_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    n = 20000
    counts = gumbel_softmax_st(logits.expand(n, 4), 0.7).decision.mean(0)
    assert torch.allclose(counts, F.softmax(logits, 0), atol=0.015)
    bl = torch.tensor([-1.5, 0.0, 2.0])
    freq = gumbel_sigmoid_st(bl.expand(n, 3), 0.7).decision.mean(0)
    assert torch.allclose(freq, torch.sigmoid(bl), atol=0.015)
    # noise samplers: Gumbel mean is Euler's constant, logistic mean 0, var pi^2/3
    gs = sample_gumbel((n, ))
    ls = sample_logistic((n, ))
    assert abs(gs.mean().item() - 0.5772) < 0.03
    assert abs(ls.mean().item()) < 0.05 and abs(ls.var().item() - 3.2899) < 0.15


def test_eval_rules():
    logits = torch.tensor([[0.2, 1.5, -0.3], [2.0, 2.5, 2.4]])
    out = categorical_eval(logits)
    assert torch.equal(out.decision, torch.tensor([[0., 1., 0.], [0., 1., 0.]]))
    assert torch.allclose(out.soft, F.softmax(logits, -1))
    # imposed choices: their one-hot, the same soft; along another dim as well
    imposed = categorical_eval(logits, index=torch.tensor([2, 0]))
    assert torch.equal(imposed.decision, torch.tensor([[0., 0., 1.], [1., 0., 0.]]))
    assert torch.equal(imposed.soft, out.soft)
    cols = categorical_eval(logits, dim=0, index=torch.tensor([1, 0, 1]))
    assert torch.equal(cols.decision, torch.tensor([[0., 1., 0.], [1., 0., 1.]]))
    b = torch.tensor([-0.1, 0.1, 1.0, 0.9])
    out = binary_eval(b, threshold=0.7)
    assert torch.equal(out.decision, (torch.sigmoid(b) > 0.7).float())
    assert torch.equal(out.decision, torch.tensor([0., 0., 1., 1.]))


def test_bad_tau_and_noise():
    with pytest.raises(ValueError, match='tau'):
        gumbel_softmax_st(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match='tau'):
        gumbel_sigmoid_st(torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match='noise shape'):
        gumbel_softmax_st(torch.zeros(2, 3), 1.0, noise=torch.zeros(3))
    with pytest.raises(ValueError, match='tau'):
        GumbelSoftmaxGate(4, 3, tau=0)


def test_softmax_gate_module_train_and_eval():
    torch.manual_seed(0)
    gate = GumbelSoftmaxGate(8, 3, tau=0.5)
    nn.init.normal_(gate.proj.weight)
    x = torch.randn(2, 10, 8)
    logits = x @ gate.proj.weight.t() + gate.proj.bias
    gate.eval()
    a, b = gate(x), gate(x)
    assert torch.equal(a.decision, b.decision) and torch.equal(a.soft, b.soft)
    assert torch.equal(a.decision, F.one_hot(logits.argmax(-1), 3).float())
    assert torch.allclose(a.logits, logits, atol=1e-6)
    gate.train()
    torch.manual_seed(5)
    out = gate(x)
    torch.manual_seed(5)
    g = sample_gumbel(logits.shape)
    assert torch.equal(out.decision, F.one_hot((out.logits.detach() + g).argmax(-1), 3).float())
    assert torch.allclose(out.soft, F.softmax((out.logits.detach() + g) / 0.5, -1), atol=1e-6)
    # tau is a plain attribute a hook can move
    gate.tau = 0.25
    torch.manual_seed(5)
    out = gate(x)
    assert torch.allclose(out.soft, F.softmax((out.logits.detach() + g) / 0.25, -1), atol=1e-6)
    # straight-through reaches the projection
    (out.decision * torch.randn_like(out.decision)).sum().backward()
    assert gate.proj.weight.grad is not None and gate.proj.weight.grad.abs().sum() > 0


def test_sigmoid_gate_module():
    torch.manual_seed(0)
    gate = GumbelSigmoidGate(6, threshold=0.6)
    nn.init.normal_(gate.proj.weight)
    x = torch.randn(3, 5, 6)
    logit = (x @ gate.proj.weight.t() + gate.proj.bias).squeeze(-1)
    gate.eval()
    out = gate(x)
    assert out.decision.shape == (3, 5)
    assert torch.equal(out.decision, (torch.sigmoid(logit) > 0.6).float())
    assert torch.equal(gate(x).decision, out.decision)
    gate.train()
    torch.manual_seed(3)
    out = gate(x)
    torch.manual_seed(3)
    noise = sample_logistic(logit.shape)
    assert torch.equal(out.decision, ((out.logits.detach() + noise) > 0).float())


def test_initial_probabilities():
    gate = GumbelSoftmaxGate(4, 3, init_probs=(0.95, 0.025, 0.025))
    p = F.softmax(gate.proj.bias.detach().double(), 0)
    assert torch.allclose(p, torch.tensor([0.95, 0.025, 0.025], dtype=torch.float64), atol=1e-6)
    assert gate.proj.weight.abs().max() <= 0.02 + 1e-9
    bgate = GumbelSigmoidGate(4, init_prob=0.9)
    assert abs(torch.sigmoid(bgate.proj.bias.detach()).item() - 0.9) < 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match='num_choices'):
        GumbelSoftmaxGate(4, 1)
    with pytest.raises(ValueError, match='in_channels'):
        GumbelSoftmaxGate(None, 2)
    with pytest.raises(ValueError, match='momentum'):
        GumbelSigmoidGate(4, momentum=1.0)
    with pytest.raises(ValueError, match='threshold'):
        GumbelSigmoidGate(4, threshold=1.0)
    with pytest.raises(ValueError, match='init_probs'):
        GumbelSoftmaxGate(4, 3, init_probs=(0.5, 0.5))
    gate = GumbelSoftmaxGate(num_choices=3, proj=nn.Linear(4, 2))
    with pytest.raises(ValueError, match='expected 3'):
        gate(torch.randn(2, 4))
    bgate = GumbelSigmoidGate(proj=nn.Linear(4, 2))
    with pytest.raises(ValueError, match='one logit'):
        bgate(torch.randn(2, 4))


def test_registry_build():
    gate = MODELS.build(dict(type='GumbelSoftmaxGate', in_channels=4, num_choices=3, tau=2.0))
    assert isinstance(gate, GumbelSoftmaxGate) and gate.tau == 2.0
    bgate = MODELS.build(dict(type='GumbelSigmoidGate', in_channels=4, momentum=0.9))
    assert isinstance(bgate, GumbelSigmoidGate) and bgate.momentum == 0.9


def test_momentum_ema_values_eval_use_and_state_dict():
    torch.manual_seed(0)
    m = 0.8
    gate = GumbelSoftmaxGate(4, 3, momentum=m)
    x = torch.randn(5, 4)
    # before any update: eval uses the live weights
    gate.eval()
    assert torch.allclose(gate(x).logits, F.linear(x, gate.proj.weight, gate.proj.bias))
    gate.train()
    ema_w = ema_b = None
    for step in range(4):
        with torch.no_grad():
            gate.proj.weight.copy_(torch.randn(3, 4))
            gate.proj.bias.copy_(torch.randn(3))
        gate.momentum_update()
        w, b = gate.proj.weight.detach(), gate.proj.bias.detach()
        if step == 0:
            ema_w, ema_b = w.clone(), b.clone()
        else:
            ema_w, ema_b = ema_w * m + w * (1 - m), ema_b * m + b * (1 - m)
    assert int(gate.ema.num_updates) == 4
    assert torch.allclose(gate.ema.weight, ema_w, atol=1e-7)
    assert torch.allclose(gate.ema.bias, ema_b, atol=1e-7)
    # train uses the live weights, eval the EMA
    assert torch.allclose(gate(x, stochastic=False).logits, F.linear(x, w, b), atol=1e-6)
    gate.eval()
    out = gate(x)
    assert torch.allclose(out.logits, F.linear(x, ema_w, ema_b), atol=1e-6)
    assert torch.equal(out.decision, F.one_hot((x @ ema_w.t() + ema_b).argmax(-1), 3).float())
    # buffers are in the state dict and round-trip
    sd = gate.state_dict()
    assert {'ema.weight', 'ema.bias', 'ema.num_updates'} <= set(sd)
    other = GumbelSoftmaxGate(4, 3, momentum=m)
    other.load_state_dict(sd)
    other.eval()
    assert torch.equal(other.ema.weight, gate.ema.weight)
    assert int(other.ema.num_updates) == 4
    assert torch.equal(other(x).logits, out.logits)


def test_momentum_with_given_projection():
    torch.manual_seed(0)
    proj = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    gate = GumbelSigmoidGate(proj=proj, momentum=0.5)
    assert set(gate.ema_state()) == {'0.weight', '0.bias', '2.weight', '2.bias'}
    gate.momentum_update()
    snapshot = copy.deepcopy(proj)
    with torch.no_grad():
        for p in proj.parameters():
            p.add_(1.0)
    gate.momentum_update()
    ref = copy.deepcopy(snapshot)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.5)  # 0.5 * old + 0.5 * (old + 1)
    x = torch.randn(6, 4)
    gate.eval()
    assert torch.allclose(gate(x).logits, ref(x).squeeze(-1), atol=1e-6)
    # no momentum: update is a no-op and there are no buffers
    plain = GumbelSigmoidGate(4)
    plain.momentum_update()
    assert plain.ema_state() == {} and len(list(plain.ema.buffers())) == 0
