import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmdyn.engine.hooks import GateMomentumHook, find_momentum_gates
from mmdyn.models.layers import GumbelSigmoidGate, GumbelSoftmaxGate
from mmdyn.registry import HOOKS


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.g1 = GumbelSoftmaxGate(4, 3, momentum=0.5)
        self.block = nn.Sequential(nn.Linear(4, 4), GumbelSigmoidGate(4, momentum=0.9))
        self.plain = GumbelSigmoidGate(4)  # no momentum: left alone


class _FakeRunner:

    def __init__(self, model):
        self.model = model
        self.iter = 0


def test_find_gates_through_wrapper():
    net = _Net()
    gates = find_momentum_gates(nn.DataParallel(net))
    assert gates == [net.g1, net.block[1]]


def test_hook_updates_ema_every_interval():
    torch.manual_seed(0)
    net = _Net()
    runner = _FakeRunner(nn.DataParallel(net))
    hook = HOOKS.build(dict(type='mmdyn.GateMomentumHook', interval=2))
    assert isinstance(hook, GateMomentumHook)
    hook.before_train(runner)
    ema = None
    for it in range(6):
        runner.iter = it
        with torch.no_grad():
            net.g1.proj.weight.copy_(torch.randn(3, 4))
        hook.after_train_iter(runner, it)
        if (it + 1) % 2 == 0:
            w = net.g1.proj.weight.detach()
            ema = w.clone() if ema is None else ema * 0.5 + w * 0.5
    assert int(net.g1.ema.num_updates) == 3 and int(net.block[1].ema.num_updates) == 3
    assert torch.allclose(net.g1.ema.weight, ema, atol=1e-7)
    assert len(list(net.plain.ema.buffers())) == 0


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.gate = GumbelSoftmaxGate(4, 2, momentum=0.75)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.gate(inputs, stochastic=True)
        if mode == 'loss':
            return dict(loss=((out.decision - 0.3)**2 * out.logits.new_tensor([1., 2.])).mean())
        return out.decision


class _Recorder(Hook):
    """Runs before GateMomentumHook (higher priority): records the post-step weights."""
    priority = 'HIGH'

    def __init__(self):
        self.weights = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.weights.append(runner.model.gate.proj.weight.detach().clone())


def test_hook_in_a_runner(tmp_path):
    torch.manual_seed(0)
    data = [dict(inputs=torch.randn(4)) for _ in range(8)]
    recorder = _Recorder()
    runner = Runner(
        model=_ToyModel(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.0)),
        train_cfg=dict(by_epoch=False, max_iters=4, val_interval=100),
        custom_hooks=[dict(type='mmdyn.GateMomentumHook'), recorder],
        default_hooks=dict(logger=None, checkpoint=None), log_level='WARNING')
    runner.train()
    ws = recorder.weights
    assert len(ws) == 4 and not torch.equal(ws[0], ws[-1])  # the weights did train
    ema = ws[0]
    for w in ws[1:]:
        ema = ema * 0.75 + w * 0.25
    gate = runner.model.gate
    assert int(gate.ema.num_updates) == 4
    assert torch.allclose(gate.ema.weight, ema, atol=1e-7)


@pytest.mark.parametrize('interval', [0, -1, 1.5, '2', None, True])
def test_bad_interval(interval):
    """Not a positive int: one clear error (1.5 updated every third iteration, silently)."""
    with pytest.raises(ValueError, match=r'GateMomentumHook: interval must be a positive int'):
        GateMomentumHook(interval=interval)
