"""tools/analysis_tools/dvt_thresholds.py: solver vs the public geometric schedule and brute
force on synthetic per-exit predictions, the JSON the config reads, the plot, the config path."""
import importlib.util
import itertools
import json
import os.path as osp
import textwrap

import numpy as np
import pytest
import torch

# tiny models: one thread avoids oversubscribing the shared CPUs (much faster here)
pytestmark = pytest.mark.usefixtures('one_thread')
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location(
    '_mmdyn_tool_dvt_thresholds', osp.join(REPO, 'tools', 'analysis_tools',
                                           'dvt_thresholds.py'))
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def synthetic(n=1500, k=3, c=10, seed=0):
    """Per-exit softmax outputs whose confidence and correctness grow with the exit and fall
    with a per-image difficulty (like a real cascade)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    diff = rng.uniform(0, 1, n)
    scores = np.zeros((k, n, c))
    for e in range(k):
        strength = 4.0 * (1 + e) * (1.2 - diff) + rng.normal(0, 1.0, n)
        logits = rng.normal(0, 1, (n, c))
        logits[np.arange(n), labels] += strength
        p = np.exp(logits - logits.max(1, keepdims=True))
        scores[e] = p / p.sum(1, keepdims=True)
    return scores, labels, np.array([0.5, 0.9, 1.8])


def test_evaluate_and_exit_rule():
    conf = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.3]])
    correct = np.array([[1, 0, 0], [0, 1, 1]], bool)
    r = tool.evaluate(conf, correct, [1., 3.], [0.5])
    assert tool.exit_indices(conf, [0.5]).tolist() == [0, 1, 0]
    assert r['accuracy'] == pytest.approx(2 / 3)
    assert r['gflops'] == pytest.approx((1 + 3 + 1) / 3)
    assert r['exit_shares'] == [2 / 3, 1 / 3]
    # thresholds 0: everyone stops first; 1 (nobody fully sure): everyone runs every exit
    assert tool.evaluate(conf, correct, [1., 3.], [0.])['gflops'] == 1.
    assert tool.evaluate(conf, correct, [1., 3.], [1.])['gflops'] == 3.


def test_geometric_schedule_shares():
    scores, labels, f = synthetic()
    conf = scores.max(-1)
    sh = tool.geometric_shares(0.5, 3)
    np.testing.assert_allclose(sh, np.array([.5, .25, .125]) / .875)
    th = tool.schedule_thresholds(conf, sh)
    ex = tool.exit_indices(conf, th)
    n = conf.shape[1]
    assert abs((ex == 0).sum() - int(n * sh[0])) <= 2
    assert abs((ex == 1).sum() - int(n * sh[1])) <= 2


@pytest.mark.parametrize('seed', [0, 1])
def test_solver_beats_geometric_baseline(seed):
    scores, labels, f = synthetic(seed=seed)
    conf, correct = scores.max(-1), scores.argmax(-1) == labels[None]
    cum = np.cumsum(f)
    gains = []
    for budget in np.linspace(cum[0] + 0.05, cum[-1] - 0.05, 8):
        r = tool.solve_thresholds(conf, correct, cum, budget)
        assert r['gflops'] <= budget + 1e-9
        # what the thresholds really give
        chk = tool.evaluate(conf, correct, cum, r['thresholds'])
        assert chk['accuracy'] == pytest.approx(r['accuracy'])
        assert chk['gflops'] == pytest.approx(r['gflops'])
        assert all(0 <= t <= 1 for t in r['thresholds'])
        base = r['baseline']
        assert base is not None and base['gflops'] <= budget + 1e-9
        assert r['accuracy'] >= base['accuracy']
        gains.append(r['accuracy'] - base['accuracy'])
    assert max(gains) > 0  # strictly better somewhere


def test_solver_close_to_brute_force():
    scores, labels, f = synthetic(n=600, seed=3)
    conf, correct = scores.max(-1), scores.argmax(-1) == labels[None]
    cum = np.cumsum(f)
    grid = [np.quantile(conf[k], np.linspace(0, 1, 41)) for k in range(2)]
    for budget in (0.9, 1.5, 2.2):
        best = max((tool.evaluate(conf, correct, cum, [a, b]) for a, b in
                    itertools.product(grid[0], grid[1])),
                   key=lambda r: r['accuracy'] if r['gflops'] <= budget else -1)
        r = tool.solve_thresholds(conf, correct, cum, budget)
        # the solver searches a finer grid; it can miss a joint optimum by a hair at most
        assert r['accuracy'] >= best['accuracy'] - 0.005


def test_budget_below_first_exit():
    scores, labels, f = synthetic(n=100)
    with pytest.raises(ValueError, match='below the first exit'):
        tool.solve_thresholds(scores.max(-1), scores.argmax(-1) == labels[None],
                              np.cumsum(f), 0.1)


def test_cli_writes_json_read_by_model_and_plot(tmp_path):
    scores, labels, f = synthetic(n=500)
    preds = tmp_path / 'preds.npz'
    np.savez(preds, scores=scores, labels=labels, exit_gflops=f)
    out = tmp_path / 'th' / 'thresholds.json'
    png = tmp_path / 'curve.png'
    assert tool.main(['--preds', str(preds), '--budget', '1.2', '--out', str(out), '--plot',
                      str(png), '--num-budgets', '5']) == 0
    res = json.loads(out.read_text())
    assert len(res['thresholds']) == 2 and res['gflops'] <= 1.2
    assert res['cumulative_gflops'] == pytest.approx(np.cumsum(f).tolist())
    with open(png, 'rb') as fh:
        assert fh.read(8) == b'\x89PNG\r\n\x1a\n'
    from mmdyn.models.classifiers.dvt import DVTClassifier
    m = DVTClassifier(arch=dict(embed_dims=16, depth=1, num_heads=1, mlp_ratio=1),
                      exits=(2, 3, 4), patch_size=8, num_classes=10, thresholds_file=str(out))
    assert m.thresholds == pytest.approx(res['thresholds'])


def test_cli_from_config(tmp_path, toy_imagenet):
    cfg = tmp_path / 'tiny_dvt.py'
    out = tmp_path / 'thresholds.json'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(REPO, 'configs', 'dvt', 'dvt_deit-s_8xb128_in1k.py')}'
        model = dict(arch=dict(_delete_=True, embed_dims=16, depth=1, num_heads=1,
                               mlp_ratio=1),
                     exits=[2, 3, 4], patch_size=8, num_classes=1000,
                     thresholds_file='{out}')
        val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                              dataset=dict(data_root='{toy_imagenet}', data_prefix='val',
                                           ann_file='meta/val.txt', split='',
                                           pipeline=[dict(type='LoadImageFromFile'),
                                                     dict(type='Resize', scale=32),
                                                     dict(type='PackInputs')]))
    """))
    saved = tmp_path / 'preds.npz'
    assert tool.main([str(cfg), '--split', 'val', '--budget', '1e9',
                      '--save-preds', str(saved)]) == 0
    res = json.loads(out.read_text())
    d = np.load(saved)
    assert d['scores'].shape[:2] == (3, 4)
    np.testing.assert_allclose(d['scores'].sum(-1), 1, rtol=1e-5)
    assert len(res['thresholds']) == 2 and res['num_images'] == 4


def test_calibration_images_are_training_images_cropped_and_flipped(tmp_path, toy_imagenet):
    """The default calibration (the public code's): the training pipeline without its
    RandAugment and random erasing, a seeded random subset of ``--num-images`` training images
    (the same images for the same seed), not the reported val split."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dvt', 'dvt_deit-s_8xb128_in1k.py'))
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandAugment' in types and 'RandomErasing' in types
    assert [t['type'] for t in tool.calibration_pipeline(cfg.train_dataloader.dataset.pipeline)
            ] == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    tiny = tmp_path / 'tiny_dvt.py'
    tiny.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(REPO, 'configs', 'dvt', 'dvt_deit-s_8xb128_in1k.py')}'
        model = dict(arch=dict(_delete_=True, embed_dims=16, depth=1, num_heads=1,
                               mlp_ratio=1),
                     exits=[2, 3, 4], patch_size=8, num_classes=1000)
        train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                                dataset=dict(data_root='{toy_imagenet}', data_prefix='train',
                                             ann_file='meta/train.txt', split='',
                                             pipeline=[dict(type='LoadImageFromFile'),
                                                       dict(type='RandomResizedCrop', scale=32),
                                                       dict(type='RandAugment',
                                                            policies='timm_increasing',
                                                            num_policies=2, total_level=10,
                                                            magnitude_level=9),
                                                       dict(type='PackInputs')]))
        val_dataloader = dict(dataset=dict(data_root='/nonexistent'))
    """))
    labels = {}
    for seed in (0, 0, 1):
        preds = tmp_path / f'p{seed}.npz'
        assert tool.main([str(tiny), '--budget', '1e9', '--num-images', '3', '--seed',
                          str(seed), '--out', str(tmp_path / 'th.json'),
                          '--save-preds', str(preds)]) == 0
        d = np.load(preds)
        assert d['scores'].shape[:2] == (3, 3)
        labels.setdefault(seed, []).append(d['labels'].tolist())
    assert labels[0][0] == labels[0][1]
    train = [int(line.split()[1]) for line in open(osp.join(toy_imagenet, 'meta', 'train.txt'))]
    assert all(label in train for label in labels[0][0] + labels[1][0])
