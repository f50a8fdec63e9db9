import copy
import glob
import json
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel, BaseTTAModel
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from torch.utils.data import Dataset

import mmdyn  # noqa: F401
from mmdyn.models.utils.dynamic import DynamicModuleMixin
from mmdyn.models.utils.records import (attach_dynamic_records, detach_dynamic_records,
                                        get_record_collector)

PATCH = 2
COST = 10.0  # FLOPs per kept token
BASE = 4.0  # FLOPs per image that always run


class ToyDynamicBackbone(DynamicModuleMixin, nn.Module):
    """Keeps the 2x2 patches whose mean intensity is above 0.5 (in [0, 1] images)."""

    def __init__(self):
        super().__init__()
        self.reset_dynamic_records()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        p = nn.functional.avg_pool2d(x.mean(1, keepdim=True), PATCH)[:, 0]  # B, h, w
        keep = (p > 0.5).float()
        if self.force_full:
            keep = torch.ones_like(keep)
        n = keep.flatten(1).sum(1)
        total = keep[0].numel()
        self.record_dynamic(
            flops=BASE + COST * n,
            stats=dict(kept_ratio=n / total, exit_ratio=(n > total / 2).float()),
            maps=dict(keep=keep))
        return (p * keep * self.scale).flatten(1).sum(1)

    def static_flops(self, img_shape):
        return BASE + COST * (img_shape[0] // PATCH) * (img_shape[1] // PATCH)


class ToyDynamicModel(BaseModel):

    def __init__(self, calls_per_predict=1):
        super().__init__(data_preprocessor=dict(type='ImgDataPreprocessor'))
        self.backbone = ToyDynamicBackbone()
        self.calls = calls_per_predict

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = inputs / 255.0
        if mode == 'loss':
            return dict(loss=(self.backbone(x)**2).mean() * 1e-3)
        if mode == 'predict':
            if self.calls == 2:  # like sliding windows: left and right halves
                w = x.shape[-1] // 2
                out = self.backbone(x[..., :w]) + self.backbone(x[..., w:])
            else:
                out = self.backbone(x)
            for s, o in zip(data_samples, out):
                s.set_field(o, 'score')
            return list(data_samples)
        return self.backbone(x)


def make_images(n=6, h=4, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, h, w, generator=g) * 255).to(torch.uint8) for _ in range(n)]


class ImageDataset(Dataset):

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return dict(inputs=self.images[i], data_samples=BaseDataElement(metainfo=dict(idx=i)))


def by_hand(img, halves=False):
    """Per-image records computed independently from the toy rule."""
    x = img.float() / 255.0
    parts = [x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]] if halves else [x]
    flops, static, kept, exit_ = 0.0, 0.0, [], []
    for part in parts:
        p = nn.functional.avg_pool2d(part.mean(0, keepdim=True)[None], PATCH)[0, 0]
        n = float((p > 0.5).sum())
        total = p.numel()
        flops += BASE + COST * n
        static += BASE + COST * total
        kept.append(n / total)
        exit_.append(float(n > total / 2))
    return dict(flops=flops, static=static, kept_ratio=sum(kept) / len(kept),
                exit_ratio=sum(exit_) / len(exit_), flops_ratio=flops / static)


def loader(images, batch_size=2):
    return dict(dataset=ImageDataset(images), batch_size=batch_size, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=False))


def test_train_logging_and_eval_averages(tmp_path):
    train_images = make_images(4, seed=1)
    val_images = make_images(5, seed=2)
    model = ToyDynamicModel()
    runner = Runner(
        model=model, work_dir=str(tmp_path), experiment_name=f'stats_{uuid.uuid4().hex[:8]}',
        train_dataloader=loader(train_images),
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2),
        val_dataloader=loader(val_images), val_cfg=dict(),
        val_evaluator=[dict(type='mmdyn.ComplexityMetric')],
        test_dataloader=loader(val_images), test_cfg=dict(),
        test_evaluator=[dict(type='mmdyn.ComplexityMetric')],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mmdyn.DynamicStatsHook')], default_scope='mmengine')
    runner.train()
    hub = runner.message_hub

    # training: batch means of each iteration
    batches = [train_images[0:2], train_images[2:4]]
    for key in ('kept_ratio', 'exit_ratio', 'flops_ratio'):
        logged = hub.get_scalar(f'train/dyn_{key}').data[0].tolist()
        exp = [sum(by_hand(im)[key] for im in b) / 2 for b in batches]
        assert logged == pytest.approx(exp), key
    gf = hub.get_scalar('train/dyn_gflops').data[0].tolist()
    assert gf == pytest.approx([sum(by_hand(im)['flops'] for im in b) / 2e9 for b in batches])

    # validation: averages over the 5 images (two batches of 2 and one of 1)
    hand = [by_hand(im) for im in val_images]
    for key in ('kept_ratio', 'exit_ratio', 'flops_ratio'):
        assert hub.get_scalar(f'val/dyn_{key}').current() == pytest.approx(
            sum(h[key] for h in hand) / 5)
        assert hub.get_scalar(f'val/complexity/{key}').current() == pytest.approx(
            sum(h[key] for h in hand) / 5)
    assert hub.get_scalar('val/complexity/gflops').current() == pytest.approx(
        sum(h['flops'] for h in hand) / 5e9)
    assert hub.get_scalar('val/complexity/static_gflops').current() == pytest.approx(
        sum(h['static'] for h in hand) / 5e9)

    # test: message hub and the visual backend
    metrics = runner.test()
    assert metrics['complexity/kept_ratio'] == pytest.approx(sum(h['kept_ratio']
                                                                 for h in hand) / 5)
    assert hub.get_scalar('test/dyn_kept_ratio').current() == pytest.approx(
        sum(h['kept_ratio'] for h in hand) / 5)
    lines = [json.loads(line) for f in glob.glob(str(tmp_path / '*' / 'vis_data' /
                                                       'scalars.json')) for line in open(f)]
    test_lines = [d for d in lines if 'test/dyn_kept_ratio' in d]
    assert len(test_lines) == 1
    assert test_lines[0]['test/dyn_exit_ratio'] == pytest.approx(
        sum(h['exit_ratio'] for h in hand) / 5)
    val_lines = [d for d in lines if 'dyn_kept_ratio' in d and 'test/dyn_kept_ratio' not in d]
    assert any(d['dyn_kept_ratio'] == pytest.approx(sum(h['kept_ratio'] for h in hand) / 5)
               for d in val_lines)


def test_records_reach_samples_and_sum_over_calls():
    images = make_images(3, seed=3)
    model = ToyDynamicModel(calls_per_predict=2)
    assert attach_dynamic_records(model) is attach_dynamic_records(model)  # idempotent
    n_hooks = len(model.backbone._forward_hooks)
    attach_dynamic_records(model)
    assert len(model.backbone._forward_hooks) == n_hooks
    data = dict(inputs=images, data_samples=[BaseDataElement() for _ in images])
    out = model.test_step(data)
    for sample, img in zip(out, images):
        h = by_hand(img, halves=True)
        assert isinstance(sample.dynamic_flops, float)
        assert sample.dynamic_flops == pytest.approx(h['flops'])
        assert sample.dynamic_static_flops == pytest.approx(h['static'])
        assert sample.dynamic_stats['kept_ratio'] == pytest.approx(h['kept_ratio'])
        assert sample.dynamic_stats['flops_ratio'] == pytest.approx(h['flops_ratio'])
        assert 'dynamic_flops' in sample.metainfo_keys()

    # a deep copy (as EMAHook makes) keeps working on its own modules
    twin = copy.deepcopy(model)
    out2 = twin.test_step(dict(inputs=images[:1], data_samples=[BaseDataElement()]))
    assert out2[0].dynamic_flops == pytest.approx(by_hand(images[0], halves=True)['flops'])

    detach_dynamic_records(model)
    assert get_record_collector(model) is None
    out = model.test_step(dict(inputs=images[:1], data_samples=[BaseDataElement()]))
    assert 'dynamic_flops' not in out[0]


class ToyTTAModel(BaseTTAModel):
    """Test-time augmentation as mmengine runs it: the wrapped model's ``test_step`` once per
    view, then the views' predictions merged (here: the first view's sample, scores summed)."""

    def merge_preds(self, data_samples_list):
        merged = []
        for views in data_samples_list:
            sample = views[0].clone()
            sample.set_field(sum(v.score for v in views), 'score')
            merged.append(sample)
        return merged


def test_test_time_augmentation_sums_the_views():
    """A TTA wrapper never calls its own forward (its test_step runs the model per view): the
    merged samples still get their own records, the sums over the views, one call at a time."""
    images = make_images(3, seed=4)
    inverted = [255 - img for img in images]  # a second view that keeps other patches
    tta = ToyTTAModel(module=ToyDynamicModel())
    attach_dynamic_records(tta)
    for _ in range(2):  # nothing carried from one call to the next
        data = dict(inputs=[images, inverted],
                    data_samples=[[BaseDataElement() for _ in images] for _ in range(2)])
        out = tta.test_step(data)
        for sample, img, inv in zip(out, images, inverted):
            a, b = by_hand(img), by_hand(inv)
            assert a['flops'] != b['flops'] or a['kept_ratio'] != b['kept_ratio']
            assert sample.dynamic_flops == pytest.approx(a['flops'] + b['flops'])
            assert sample.dynamic_static_flops == pytest.approx(a['static'] + b['static'])
            assert sample.dynamic_stats['kept_ratio'] == pytest.approx(
                (a['kept_ratio'] + b['kept_ratio']) / 2)
    detach_dynamic_records(tta)
    assert 'test_step' not in tta.__dict__
    out = tta.test_step(dict(inputs=[images[:1]], data_samples=[[BaseDataElement()]]))
    assert 'dynamic_flops' not in out[0]


def test_no_dynamic_module_is_a_no_op():
    assert attach_dynamic_records(nn.Linear(2, 2)) is None


@pytest.mark.parametrize('world, n, padded', [(2, 5, [0, 1]), (2, 6, [0, 0]),
                                               (4, 5, [0, 1, 1, 1]), (3, 7, [0, 1, 1])])
def test_images_a_distributed_sampler_repeats_are_not_counted(monkeypatch, world, n, padded):
    """mmengine's DefaultSampler gives every rank ceil(n / world) images, repeating the first
    ones at the end; the metrics drop those, so the hook's eval means do too: rank r drops its
    last image when it is a repeat."""
    from mmengine.dataset import DefaultSampler

    import mmdyn.engine.hooks.stats_hook as sh
    dataset = ImageDataset(make_images(n))
    for rank in range(world):
        monkeypatch.setattr(sh, 'get_world_size', lambda: world)
        monkeypatch.setattr(sh, 'get_rank', lambda: rank)
        monkeypatch.setattr(sh, 'all_gather_object', lambda obj: [obj])
        sampler = DefaultSampler(dataset, shuffle=False)
        sampler.rank, sampler.world_size = rank, world  # as on that rank
        sampler.num_samples = -(-n // world)
        sampler.total_size = sampler.num_samples * world
        order = list(iter(sampler))
        loop = type('Loop', (), {'dataloader': type('DL', (), {'sampler': sampler})()})()
        assert sh._padded_on_this_rank(loop) == padded[rank]
        # the repeat is the last image of the rank: positions rank, rank + world, ...
        positions = list(range(rank, sampler.total_size, world))
        assert (positions[-1] >= n) == bool(padded[rank])
        hook = sh.DynamicStatsHook()
        hook._images = [dict(kept_ratio=float(i)) for i in order]
        kept = order[:len(order) - padded[rank]]
        assert hook._means(loop) == ({'kept_ratio': sum(kept) / len(kept)} if kept else {})
    monkeypatch.setattr(sh, 'get_world_size', lambda: 1)
    hook = sh.DynamicStatsHook()
    hook._images = [dict(kept_ratio=1.0), dict(kept_ratio=0.0)]
    assert hook._means(None) == {'kept_ratio': 0.5}  # one process: nothing dropped
