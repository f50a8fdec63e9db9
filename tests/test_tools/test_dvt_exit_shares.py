"""DVT thresholds for a chosen early-exit share of benchmark.py's generated batch
(tools/analysis_tools/dvt_thresholds.py --exit-shares), and the meaning of a threshold of 1.0
(nobody stops, even with a saturated softmax)."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

import mmdyn  # noqa: F401
from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
from mmdyn.models.classifiers.dvt import MAX_EXIT_THRESHOLD, DVTClassifier, exits_at

pytestmark = pytest.mark.usefixtures('one_thread')
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2)


@pytest.fixture
def tool(load_tool):
    return load_tool('tools/analysis_tools/dvt_thresholds.py')


def test_threshold_one_stops_nobody_even_when_softmax_saturates(tool):
    torch.manual_seed(0)
    m = DVTClassifier(arch=TINY, exits=(2, 3, 4), patch_size=8, num_classes=5,
                      thresholds=[1.0, 1.0]).eval()
    with torch.no_grad():  # huge logits at the first two exits: softmax max is 1.0 in float
        for e in m.exits[:2]:
            e.head.fc.weight.mul_(1e5)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        conf = torch.stack([o.float().softmax(-1).max(-1).values for o in m.run_all(x)])
    assert torch.all(conf[:2] == 1.0)
    with torch.no_grad():
        _, ex, _ = m.early_exit(x)
    assert torch.all(ex == 2)  # eta = 1.0: no early exit
    assert torch.all(m.last_flops == float(sum(m.exit_flops())))
    m.set_thresholds([MAX_EXIT_THRESHOLD, 1.0])
    with torch.no_grad():
        _, ex, _ = m.early_exit(x)
    assert torch.all(ex == 0)
    assert np.float32(MAX_EXIT_THRESHOLD) < 1 and np.nextafter(np.float32(MAX_EXIT_THRESHOLD),
                                                               np.float32(2)) == 1
    # the tool's rule is the model's
    t = tool
    c = conf.numpy().astype(np.float64)
    for th in ([1.0, 1.0], [MAX_EXIT_THRESHOLD, 1.0], [1.0, MAX_EXIT_THRESHOLD], [0.0, 1.0]):
        m.set_thresholds(th)
        with torch.no_grad():
            _, ex, _ = m.early_exit(x)
        assert t.exit_indices(c, th).tolist() == ex.tolist()
    # a data-derived threshold on saturated confidences still lets those images stop
    sched = t.schedule_thresholds(c, [0.5, 0.25, 0.25])
    assert sched[0] == MAX_EXIT_THRESHOLD
    assert exits_at(torch.tensor([1.0]), sched[0]).item()
    assert not exits_at(torch.tensor([1.0]), 1.0).item()


def test_thresholds_for_shares_exact_counts_and_errors(tool):
    t = tool
    rng = np.random.default_rng(0)
    conf = rng.random((3, 40)).astype(np.float32)
    for shares in ([0.5, 0.25], [0.0, 0.5], [0.25, 0.0], [1.0, 0.0], [0.0, 0.0], [0.1, 0.9]):
        th = t.thresholds_for_shares(conf, shares)
        assert all(0. <= v <= 1. for v in th)
        ex = t.exit_indices(conf.astype(np.float64), th)
        counts = np.bincount(ex, minlength=3)
        assert counts[:2].tolist() == [round(s * 40) for s in shares]
        # thresholds sit strictly between confidences (not on one) where the split is inside
        for k, v in enumerate(th):
            if 0 < v < 1:
                assert not np.any(conf[k] == np.float32(v))
    with pytest.raises(ValueError, match='sum to at most 1'):
        t.thresholds_for_shares(conf, [0.75, 0.5])
    with pytest.raises(ValueError, match='2 exit shares'):
        t.thresholds_for_shares(conf, [0.5])
    tie = np.array([[0.3, 0.5, 0.5, 0.1], [0.2] * 4], dtype=np.float32)
    with pytest.raises(ValueError, match='tie'):
        t.thresholds_for_shares(tie, [0.25])


CFG = osp.join(REPO, 'configs', 'dvt', 'dvt_t2t-vit-12_8xb128_in1k.py')
TINY_OPTS = ["model.arch={'_delete_': True, 'embed_dims': 16, 'depth': 2, 'num_heads': 2, "
             "'mlp_ratio': 2}", 'model.backbone_cfg.token_dims=8']


def test_cli_exit_shares_reproduced_by_benchmark_path(tool, tmp_path):
    """The tool's thresholds and saved random weights, loaded the way benchmark.py builds and
    feeds the model (same config, --checkpoint, generated batch of the same size), give exactly
    the requested exit shares; the FLOPs recorded per image are the cumulative FLOPs of the
    exits each image ran."""
    out, ckpt = tmp_path / 'th.json', tmp_path / 'w.pth'
    n = 8
    rc = tool.main([CFG, '--exit-shares', '0.5', '0.25', '--generated', str(n), '--out',
                      str(out), '--save-checkpoint', str(ckpt), '--cfg-options', *TINY_OPTS])
    assert rc == 0
    res = json.load(open(out))
    assert res['exit_shares'] == [0.5, 0.25, 0.25]
    assert res['requested_shares'] == [0.5, 0.25]
    assert res['min_gap'] > 0
    # benchmark.py's way: load_config + build_model_from_cfg(checkpoint) + generated_batch
    opts = {'model.arch': {'_delete_': True, 'embed_dims': 16, 'depth': 2, 'num_heads': 2,
                           'mlp_ratio': 2},
            'model.backbone_cfg.token_dims': 8, 'model.thresholds_file': str(out)}
    cfg = load_config(CFG, opts)
    torch.manual_seed(123)  # other random weights before loading: the checkpoint decides
    model = build_model_from_cfg(cfg, checkpoint=str(ckpt))
    assert model.thresholds == res['thresholds']
    inputs, samples = generated_batch(model, (224, 224), n)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    ex = np.array([s.exit_index for s in preds])
    assert np.bincount(ex, minlength=3).tolist() == [4, 2, 2]
    assert ex.tolist() == res['exit_index']
    cum = model.cumulative_flops()
    assert model.last_flops.tolist() == [float(cum[k]) for k in ex]
    assert res['flops_per_image'] == model.last_flops.tolist()
    assert res['gflops'] == pytest.approx(float(np.mean([cum[k] for k in ex])) / 1e9)
