import glob
import json
import math
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmdyn  # noqa: F401
from mmdyn.engine.hooks import DynamicScheduleHook
from mmdyn.engine.hooks.schedule_hook import _Schedule, get_by_path, set_by_path


class PairDataset(Dataset):

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], data_samples=self.y[i])


class Gate(nn.Module):

    def __init__(self):
        super().__init__()
        self.register_buffer('tau', torch.tensor(5.0))


class ToyModel(BaseModel):
    """Records the scheduled scalars its loss sees at every training forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.2]]))
            self.lin.bias.fill_(0.1)
        self.gate = Gate()
        self.budget_target = 1.0
        self.loss_cfg = dict(weight=0.0)
        self.thresholds = [0.0, 0.0]
        self.stages = nn.ModuleList([Gate(), Gate()])
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.lin(inputs)
        if mode == 'loss':
            self.seen.append(dict(budget=self.budget_target, tau=float(self.gate.tau),
                                  weight=self.loss_cfg['weight'], thr=self.thresholds[1],
                                  stage=float(self.stages[1].tau)))
            return dict(loss=((out - data_samples)**2).mean() * (1 + self.loss_cfg['weight']))
        return out


SCHEDULES = [
    dict(path='budget_target', type='linear', start_value=1.0, end_value=0.5, begin=1, end=5),
    dict(path='gate.tau', type='cosine', start_value=5.0, end_value=1.0, begin=0, end=6,
         warmup=2, warmup_value=2.0),
    dict(path='loss_cfg.weight', type='step', milestones=[2, 4], values=[0.0, 0.5, 1.0]),
    dict(path='thresholds.1', type='step', milestones=[3], start_value=0.8, gamma=0.5),
    dict(path='stages.1.tau', type='constant', value=3.0, warmup=4, warmup_value=1.0),
]


def expected(t):
    lin = 1.0 if t <= 1 else (0.5 if t >= 5 else 1.0 - 0.5 * (t - 1) / 4)

    def cos(u):
        p = min(max(u / 6, 0), 1)
        return 1.0 + 4.0 * (1 + math.cos(math.pi * p)) / 2

    tau = 2.0 + (cos(2) - 2.0) * t / 2 if t < 2 else cos(t)
    weight = [0.0, 0.5, 1.0][(t >= 2) + (t >= 4)]
    thr = 0.8 if t < 3 else 0.4
    stage = 1.0 + 2.0 * t / 4 if t < 4 else 3.0
    return dict(budget=lin, tau=tau, weight=weight, thr=thr, stage=stage)


def make_runner(work_dir, max_iters, resume=False, load_from=None, model=None):
    return Runner(
        model=model or ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'sched_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=PairDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mmdyn.DynamicScheduleHook', schedules=SCHEDULES)],
        resume=resume, load_from=load_from, default_scope='mmengine')


def assert_values(seen, iters):
    assert len(seen) == len(iters)
    for s, t in zip(seen, iters):
        exp = expected(t)
        for k in exp:
            assert s[k] == pytest.approx(exp[k], abs=1e-6), (t, k, s[k], exp[k])


def test_schedule_values_by_hand():
    s = _Schedule(dict(path='a', type='linear', start_value=2, end_value=0, begin=10, end=20))
    assert [s.value(t) for t in (0, 10, 15, 20, 99)] == [2, 2, 1, 0, 0]
    s = _Schedule(dict(path='a', type='cosine', start_value=1, end_value=0, begin=0, end=4))
    assert [s.value(t) for t in (0, 1, 2, 4, 5)] == pytest.approx(
        [1, (1 + math.cos(math.pi / 4)) / 2, 0.5, 0, 0])
    s = _Schedule(dict(path='a', type='step', milestones=[2, 5], start_value=1, gamma=0.1))
    assert [s.value(t) for t in (0, 1, 2, 4, 5, 9)] == pytest.approx([1, 1, .1, .1, .01, .01])
    s = _Schedule(dict(path='a', type='constant', value=4, begin=2, warmup=4, warmup_value=0))
    assert [s.value(t) for t in (0, 2, 3, 5, 6, 10)] == [0, 0, 1, 3, 4, 4]


@pytest.mark.parametrize('cfg, msg', [
    (dict(path='a', type='poly', start_value=1, end_value=0, end=3), 'unknown type'),
    (dict(path='a', type='linear', start_value=1, end_value=0, begin=5, end=5), 'greater'),
    (dict(path='a', type='linear', start_value=1, end=5), "'end_value' is required"),
    (dict(path='a', type='linear', start_value=1, end_value=0), "'end' is required"),
    (dict(path='a', type='step', milestones=[3, 2], values=[1, 2, 3]), 'increase'),
    (dict(path='a', type='step', milestones=[2, 3], values=[1, 2]), '3 numbers'),
    (dict(path='a', type='step', milestones=[2], start_value=1), "'gamma'"),
    (dict(path='a', type='linear', start_value='x', end_value=0, end=3), 'finite number'),
    (dict(path='a', type='linear', start_value=1, end_value=0, end=3, warmup=5,
          warmup_value=0), 'warm-up'),
    (dict(path='a', type='constant', value=1, warmup=2), 'warmup_value'),
    (dict(path='a', type='constant', value=1, begin=-1), 'begin'),
    (dict(path='a', type='constant', value=1, strat_value=2), 'unknown keys'),
    (dict(path='a..b', type='constant', value=1), 'invalid path'),
])
def test_invalid_schedule(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        DynamicScheduleHook(schedules=[cfg])


def test_duplicate_paths():
    cfg = dict(path='a', type='constant', value=1)
    with pytest.raises(ValueError, match='more than once'):
        DynamicScheduleHook(schedules=[cfg, cfg])


def test_paths():
    m = ToyModel()
    set_by_path(m, 'gate.tau', 0.25)
    assert m.gate.tau.item() == 0.25 and 'gate.tau' in m.state_dict()
    set_by_path(m, 'loss_cfg.weight', 3.0)
    set_by_path(m, 'thresholds.0', 7.0)
    set_by_path(m, 'stages.0.tau', 2.0)
    assert (m.loss_cfg['weight'], m.thresholds[0], m.stages[0].tau.item()) == (3.0, 7.0, 2.0)
    assert get_by_path(m, 'budget_target') == 1.0
    with pytest.raises(AttributeError, match="'gate.temperature'.*no attribute 'temperature'"):
        set_by_path(m, 'gate.temperature', 1.0)
    with pytest.raises(AttributeError, match="'loss_cfg.wieght'.*without key 'wieght'"):
        set_by_path(m, 'loss_cfg.wieght', 1.0)
    with pytest.raises(AttributeError, match="'thresholds.5'"):
        set_by_path(m, 'thresholds.5', 1.0)
    with pytest.raises(TypeError, match="'lin.weight'.*2 elements"):
        set_by_path(m, 'lin.weight', 1.0)
    with pytest.raises(TypeError, match="'gate'.*Gate"):
        set_by_path(m, 'gate', 1.0)
    hook = DynamicScheduleHook([dict(path='backbone.budget_target', type='constant', value=1)])
    with pytest.raises(AttributeError, match="'backbone.budget_target' does not exist"):
        hook.check_paths(m)


def test_runner_resume_continues_exactly(tmp_path):
    # uninterrupted: 7 iterations
    full = make_runner(tmp_path / 'full', max_iters=7)
    full.train()
    assert_values(full.model.seen, range(7))
    hub = full.message_hub
    assert hub.get_scalar('train/budget_target').current() == pytest.approx(expected(6)['budget'])
    taus = hub.get_scalar('train/gate.tau').data[0]
    assert taus.tolist() == pytest.approx([expected(t)['tau'] for t in range(7)])
    # the logger wrote the scheduled values to the visual backend
    scalars = glob.glob(str(tmp_path / 'full' / '*' / 'vis_data' / 'scalars.json'))
    lines = [json.loads(line) for line in open(scalars[0])]
    assert [d['stages.1.tau'] for d in lines] == pytest.approx(
        [expected(t)['stage'] for t in range(7)])

    # interrupted after 3 iterations, then resumed to 7
    part = make_runner(tmp_path / 'part', max_iters=3)
    part.train()
    ckpt = torch.load(str(tmp_path / 'part' / 'iter_3.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['mmdyn_schedule']['values']['budget_target'] == pytest.approx(
        expected(2)['budget'])
    assert ckpt['mmdyn_schedule']['progress']['gate.tau'] == 2
    resumed = make_runner(tmp_path / 'part', max_iters=7, resume=True)
    resumed.train()
    assert_values(resumed.model.seen, range(3, 7))
    assert [s for s in resumed.model.seen] == full.model.seen[3:]
    assert torch.allclose(resumed.model.lin.weight, full.model.lin.weight)


def test_load_restores_values_for_testing(tmp_path):
    part = make_runner(tmp_path / 'run', max_iters=3)
    part.train()
    model = ToyModel()
    runner = make_runner(tmp_path / 'run', max_iters=3, model=model)
    runner.load_checkpoint(str(tmp_path / 'run' / 'iter_3.pth'))
    exp = expected(2)
    assert model.budget_target == pytest.approx(exp['budget'])
    assert model.gate.tau.item() == pytest.approx(exp['tau'])
    assert model.thresholds[1] == pytest.approx(exp['thr'])


class EpochModel(ToyModel):
    pass


def test_by_epoch(tmp_path):
    runner = Runner(
        model=EpochModel(), work_dir=str(tmp_path), experiment_name=f'ep_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=PairDataset(4), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[DynamicScheduleHook([
            dict(path='budget_target', type='step', by_epoch=True, milestones=[1, 2],
                 values=[0.9, 0.7, 0.5]),
            dict(path='gate.tau', type='linear', start_value=0.0, end_value=5.0, end=5)])])
    runner.train()
    assert [s['budget'] for s in runner.model.seen] == [0.9, 0.9, 0.7, 0.7, 0.5, 0.5]
    assert [s['tau'] for s in runner.model.seen] == pytest.approx([0, 1, 2, 3, 4, 5])


def test_through_ddp_wrapper(tmp_path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    assert dist.is_available()
    if dist.is_initialized():  # a group leaked by an earlier test: this test does not skip
        dist.destroy_process_group()
    assert not dist.is_initialized()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        inner = ToyModel()
        runner = make_runner(tmp_path / 'ddp', max_iters=3,
                             model=MMDistributedDataParallel(module=inner))
        runner.train()
        assert_values(inner.seen, range(3))
        assert inner.gate.tau.item() == pytest.approx(expected(2)['tau'])
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ issue 19: items 6, 12, 16
def test_schedule_leaving_a_declared_range_is_refused_before_training():
    from mmdyn.models.backbones.dovit import DoViT
    from mmdyn.utils.errors import UserError

    class Wrapper(nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = DoViT(arch=dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2),
                                  img_size=32, patch_size=8, num_classes=3,
                                  decision_layers=(1, ))

    model = Wrapper()
    bad = DynamicScheduleHook([dict(path='backbone.threshold', type='linear', start_value=0.9,
                                    end_value=1.2, begin=0, end=100)])
    with pytest.raises(ValueError) as e:
        bad.check_paths(model)
    assert isinstance(e.value, UserError)
    assert str(e.value) == ("DynamicScheduleHook: the schedule of 'backbone.threshold' reaches "
                            '1.2, outside the range [0, 1] of DoViT.threshold')
    warm = DynamicScheduleHook([dict(path='backbone.threshold', type='constant', value=0.9,
                                     warmup=5, warmup_value=-0.1)])
    with pytest.raises(ValueError, match=r"reaches -0\.1, outside the range \[0, 1\]"):
        warm.check_paths(model)
    # an open end: a gate temperature must stay above 0
    tau = DynamicScheduleHook([dict(path='gate.tau', type='step', milestones=[3],
                                    values=[1.0, 0.0])])
    from mmdyn.models.layers.gates import GumbelSigmoidGate
    holder = nn.Module()
    holder.gate = GumbelSigmoidGate(4)
    with pytest.raises(ValueError, match=r"reaches 0, outside the range \(0, inf\) of "
                                         r"GumbelSigmoidGate\.tau"):
        tau.check_paths(holder)
    # within the range: accepted
    DynamicScheduleHook([dict(path='backbone.threshold', type='cosine', start_value=1.0,
                              end_value=0.95, end=10)]).check_paths(model)


def test_misspelt_path_is_a_user_error():
    from mmdyn.utils.cli import one_line
    hook = DynamicScheduleHook([dict(path='budget_targte', type='constant', value=1)])
    with pytest.raises(AttributeError) as e:
        hook.check_paths(ToyModel())
    assert one_line(e.value) == ("DynamicScheduleHook: path 'budget_targte' does not exist: "
                                 "'ToyModel' (ToyModel) has no attribute 'budget_targte'")


def test_logged_values_are_the_values_in_use(tmp_path):
    """mmengine averages logged keys matching ``loss`` over its window; a scheduled value is
    logged as the value of its iteration."""
    runner = make_runner(tmp_path / 'log', max_iters=7)
    runner.train()
    scalars = glob.glob(str(tmp_path / 'log' / '*' / 'vis_data' / 'scalars.json'))
    lines = [json.loads(line) for line in open(scalars[0])]
    assert [d['loss_cfg.weight'] for d in lines] == [expected(t)['weight'] for t in range(7)]
    assert [d['gate.tau'] for d in lines] == pytest.approx([expected(t)['tau'] for t in range(7)])
