import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmdyn  # noqa: F401
from mmdyn.engine.hooks import SelfDistillationHook
from mmdyn.models.utils.dynamic import DynamicModuleMixin

X = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
Y = torch.tensor([[0.5], [-1.0]])
KD_WEIGHT = 0.7


class PairDataset(Dataset):

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return dict(inputs=X[i], data_samples=Y[i])


@MODELS.register_module(name='DistillToyNet', force=True)
class ToyNet(BaseModel):
    """y = W x; loss = mse(y, target) + KD_WEIGHT * mse(y, distill_targets)."""

    def __init__(self, w=(0.0, 0.0)):
        super().__init__()
        self.lin = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([w]))
        self.targets_seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.lin(inputs)
        if mode == 'loss':
            t = self.distill_targets
            self.targets_seen.append(None if t is None else t.clone())
            loss = ((out - data_samples)**2).mean()
            if t is not None:
                loss = loss + KD_WEIGHT * ((out - t)**2).mean()
            return dict(loss=loss)
        return out


class GatedLinear(DynamicModuleMixin, nn.Module):
    """Drops the second input feature unless force_full is on; logs how it was called."""

    def __init__(self):
        super().__init__()
        self.reset_dynamic_records()
        self.lin = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.4]]))
        self.calls = []

    def forward(self, x):
        self.calls.append(dict(full=self.force_full, grad=torch.is_grad_enabled(),
                               training=self.training))
        mask = torch.tensor([1.0, 1.0 if self.force_full else 0.0])
        self.record_dynamic(flops=torch.full((x.shape[0], ), 2.0 if self.force_full else 1.0))
        return self.lin(x * mask)


class SelfNet(ToyNet):

    def __init__(self):
        super().__init__()
        del self.lin
        self.backbone = GatedLinear()

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.backbone(inputs)
        if mode == 'loss':
            t = self.distill_targets
            self.targets_seen.append(t.clone())
            return dict(loss=((out - data_samples)**2).mean() + KD_WEIGHT * ((out - t)**2).mean())
        return out


def run_one_iter(tmp_path, model, hook, lr=1.0):
    runner = Runner(
        model=model, work_dir=str(tmp_path), experiment_name=f'kd_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=PairDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr)),
        default_hooks=dict(checkpoint=None), custom_hooks=[hook], default_scope='mmengine')
    runner.train()
    return runner


def expected_update(w, teacher_out, lr=1.0):
    """SGD step on mse(Wx, y) + KD_WEIGHT * mse(Wx, t), gradient by hand."""
    y = X @ w.T
    grad = 2 / 2 * ((y - Y) * X).sum(0) + KD_WEIGHT * 2 / 2 * ((y - teacher_out) * X).sum(0)
    return w - lr * grad


@pytest.mark.parametrize('teacher_w', [(1.0, -2.0), (0.5, 3.0)])
def test_separate_teacher(tmp_path, teacher_w):
    teacher_sd = ToyNet(teacher_w).state_dict()
    ckpt = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict={k: v.clone() for k, v in teacher_sd.items()}), str(ckpt))
    student = ToyNet((0.2, 0.1))
    w0 = student.lin.weight.detach().clone()
    hook = SelfDistillationHook(teacher_cfg=dict(type='DistillToyNet'),
                                teacher_checkpoint=str(ckpt))
    run_one_iter(tmp_path, student, hook)

    teacher = hook.teacher
    assert torch.equal(teacher.lin.weight, teacher_sd['lin.weight'])  # loaded, unchanged
    assert teacher.lin.weight.grad is None and not teacher.lin.weight.requires_grad
    assert not teacher.training
    teacher_out = X @ torch.tensor([teacher_w]).T
    assert torch.allclose(student.targets_seen[0], teacher_out)
    assert torch.allclose(student.lin.weight, expected_update(w0, teacher_out), atol=1e-6)
    assert student.distill_targets is None  # cleared after the iteration


def test_gradient_depends_on_teacher(tmp_path):
    """The same student moves differently under two teachers, by the hand-computed amount."""
    weights = []
    for i, tw in enumerate([(1.0, -2.0), (0.5, 3.0)]):
        student = ToyNet((0.2, 0.1))
        hook = SelfDistillationHook(teacher_cfg=ToyNet(tw))
        run_one_iter(tmp_path / str(i), student, hook)
        weights.append(student.lin.weight.detach().clone())
    diff = weights[0] - weights[1]
    # d(update)/d(teacher): lr * KD_WEIGHT * sum_i (t1_i - t2_i) x_i / B * 2, sign reversed
    t1, t2 = X @ torch.tensor([[1.0, -2.0]]).T, X @ torch.tensor([[0.5, 3.0]]).T
    assert torch.allclose(diff, KD_WEIGHT * ((t1 - t2) * X).sum(0, keepdim=True), atol=1e-6)


def test_self_teacher_full_compute(tmp_path):
    model = SelfNet()
    w0 = model.backbone.lin.weight.detach().clone()
    hook = SelfDistillationHook(self_teacher=True)
    run_one_iter(tmp_path, model, hook, lr=0.5)
    calls = model.backbone.calls
    # teacher pass: every gate on, no gradient, eval mode; then the student's sparse pass
    assert calls[0] == dict(full=True, grad=False, training=False)
    assert calls[1] == dict(full=False, grad=True, training=True)
    assert model.backbone.force_full is False and model.training
    teacher_out = X @ w0.T  # both features
    assert torch.allclose(model.targets_seen[0], teacher_out)
    # the student used only the first feature
    xm = X * torch.tensor([1.0, 0.0])
    y = xm @ w0.T
    grad = ((y - Y) * xm).sum(0) + KD_WEIGHT * ((y - teacher_out) * xm).sum(0)
    assert torch.allclose(model.backbone.lin.weight, w0 - 0.5 * grad, atol=1e-6)


@pytest.mark.parametrize('share, calls', [(True, 1), (False, 2)])
def test_shared_preprocessing_is_reused(tmp_path, share, calls):
    student = ToyNet((0.2, 0.1))
    hook = SelfDistillationHook(teacher_cfg=ToyNet((1.0, 1.0)), share_preprocessed=share)
    count = []
    cls = type(student.data_preprocessor)
    orig = cls.forward

    def counting(self, *a, **k):
        count.append(1)
        return orig(self, *a, **k)

    cls.forward = counting
    try:
        run_one_iter(tmp_path, student, hook)
    finally:
        cls.forward = orig
    # shared: the student's train_step reused the batch the hook preprocessed for the teacher
    assert len(count) == calls
    assert 'forward' not in student.data_preprocessor.__dict__


def test_invalid_arguments():
    with pytest.raises(ValueError, match='a teacher is needed'):
        SelfDistillationHook()
    with pytest.raises(ValueError, match='not both'):
        SelfDistillationHook(teacher_cfg=dict(type='DistillToyNet'), self_teacher=True)
    with pytest.raises(ValueError, match='teacher_checkpoint'):
        SelfDistillationHook(self_teacher=True, teacher_checkpoint='x.pth')


class FeatNet(ToyNet):
    """ToyNet whose loss reads the dict targets of ``teacher_features=('lin',)``."""

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.lin(inputs)
        if mode == 'loss':
            t = self.distill_targets
            self.targets_seen.append(t)
            return dict(loss=((out - data_samples)**2).mean())
        return out


def test_teacher_features_are_handed_over(tmp_path):
    """teacher_features=('lin',): the targets carry the teacher's outputs and the output of its
    sub-module ``lin`` (here the same tensor, W_t x, computed by hand)."""
    student = FeatNet((0.2, 0.1))
    hook = SelfDistillationHook(teacher_cfg=ToyNet((1.0, -2.0)), teacher_features=('lin', ))
    run_one_iter(tmp_path, student, hook)
    (t, ) = student.targets_seen
    expect = X @ torch.tensor([[1.0, -2.0]]).T
    assert set(t) == {'outputs', 'features'} and set(t['features']) == {'lin'}
    assert torch.allclose(t['outputs'], expect)
    assert torch.allclose(t['features']['lin'], expect)
    assert not hook.teacher.lin._forward_hooks  # the capture hooks are removed
    bad = SelfDistillationHook(teacher_cfg=ToyNet(), teacher_features=('nope', ))
    bad.teacher = ToyNet()
    with pytest.raises(AttributeError, match='nope'):
        bad.run_teacher(student, dict(inputs=X))
