import json

import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.registry import METRICS
from mmengine.structures import BaseDataElement

import mmdyn  # noqa: F401
from mmdyn.evaluation import ComplexityMetric

# runs several processes at once: one xdist worker takes every such module in turn
pytestmark = pytest.mark.xdist_group('multiprocess')

SAMPLES = [
    dict(flops=2e9, static=4e9, stats=dict(kept_ratio=0.5, exit_ratio=0.0)),
    dict(flops=3e9, static=4e9, stats=dict(kept_ratio=0.75, exit_ratio=1.0)),
    dict(flops=1e9, static=4e9, stats=dict(kept_ratio=0.25, exit_ratio=1.0, fine_ratio=0.2)),
    dict(flops=4e9, static=4e9, stats=dict(kept_ratio=1.0, exit_ratio=0.0, fine_ratio=0.6)),
    dict(flops=5e8, static=4e9, stats=dict(kept_ratio=0.125, exit_ratio=0.0)),
]
EXPECTED = {
    'complexity/gflops': (2 + 3 + 1 + 4 + 0.5) / 5,
    'complexity/static_gflops': 4.0,
    'complexity/kept_ratio': (0.5 + 0.75 + 0.25 + 1.0 + 0.125) / 5,
    'complexity/exit_ratio': 2 / 5,
    'complexity/fine_ratio': (0.2 + 0.6) / 2,
}


def as_sample(s, pred=None):
    sample = BaseDataElement(metainfo=dict(dynamic_flops=s['flops'],
                                           dynamic_static_flops=s['static'],
                                           dynamic_stats=dict(s['stats'])))
    if pred is not None:
        sample.pred = pred
    return sample


@METRICS.register_module(name='ToyAccuracy', force=True)
class ToyAccuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        for s in data_samples:
            self.results.append(float(s['pred']))

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results))


def test_next_to_a_task_metric():
    evaluator = Evaluator([dict(type='ToyAccuracy'), dict(type='mmdyn.ComplexityMetric')])
    samples = [as_sample(s, pred=float(i % 2)) for i, s in enumerate(SAMPLES)]
    evaluator.process(samples[:2])
    evaluator.process(samples[2:])
    metrics = evaluator.evaluate(5)
    assert metrics['accuracy'] == pytest.approx(2 / 5)
    assert set(metrics) == set(EXPECTED) | {'accuracy'}
    for k, v in EXPECTED.items():
        assert metrics[k] == pytest.approx(v), k


def test_samples_without_records():
    metric = ComplexityMetric(digits=3)
    metric.process(None, [as_sample(SAMPLES[0]).to_dict(), BaseDataElement().to_dict()])
    out = metric.evaluate(2)
    assert out['complexity/gflops'] == 2.0 and out['complexity/kept_ratio'] == 0.5

    metric = ComplexityMetric()
    metric.process(None, [BaseDataElement().to_dict(), dict(pred=1)])
    with pytest.raises(RuntimeError, match='DynamicStatsHook.*attach_dynamic_records'):
        metric.evaluate(2)


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    try:
        metric = ComplexityMetric()
        # the distributed sampler's interleaving, padded with a duplicate of sample 0
        idx = [0, 2, 4] if rank == 0 else [1, 3, 0]
        metric.process(None, [as_sample(SAMPLES[i]).to_dict() for i in idx])
        res = metric.evaluate(5)
        with open(f'{out_dir}/{rank}.json', 'w') as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation(tmp_path):
    # forked workers inherit the imported modules (pytest's importlib mode gives this module a
    # name that spawned workers could not import)
    torch.multiprocessing.start_processes(
        _dist_worker, args=(2, str(tmp_path / 'pg'), str(tmp_path)), nprocs=2, join=True,
        start_method='fork')
    for rank in range(2):
        res = json.load(open(tmp_path / f'{rank}.json'))
        assert set(res) == set(EXPECTED)
        for k, v in EXPECTED.items():
            assert res[k] == pytest.approx(v), (rank, k)
