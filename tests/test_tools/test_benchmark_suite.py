"""tools/analysis_tools/benchmark_suite.py at tiny sizes on the CPU: it runs, its Markdown table
and JSON hold the numbers it measured, its FLOPs ratios equal the models' own records, the plot
is a PNG, and bad arguments give one line. Never its speed."""
import importlib.util
import json
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location(
    '_mmdyn_tool_benchmark_suite',
    osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_suite.py'))
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)

ARGS = ['--tiny', '--quick', '--levels', '0.5', '--batches', '2', '--rounds', '2',
        '--warmup', '0']


def _backbone_gflops(config, options, shape, batch):
    """Realised backbone GFLOPs per image straight from the backbone's ``last_flops`` (or its
    ``static_flops`` when it records none)."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    model = build_model_from_cfg(load_config(config, options))
    x, _ = generated_batch(model, shape, batch)
    model.backbone.last_flops = None
    with torch.no_grad():
        model.backbone(x)
    flops = model.backbone.last_flops
    if flops is None:
        return float(model.backbone.static_flops(tuple(x.shape[-2:]))) / 1e9
    assert flops.numel() == batch
    return float(flops.double().mean()) / 1e9


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('suite')
    rc = suite.main(ARGS + ['--methods', 'dit', 'dovit', 'dvt', '--out-dir', str(out_dir)])
    assert rc == 0
    with open(out_dir / 'suite.json') as f:
        data = json.load(f)
    return out_dir, data, (out_dir / 'suite.md').read_text()


def test_runs_and_table_matches_json(result):
    out_dir, data, md = result
    rows = data['rows']
    assert [(r['method'], r['level'], r['batch']) for r in rows] == [
        ('dit', 0.5, 2), ('dovit', 0.5, 2), ('dvt', 0.5, 2)]
    assert data['device'] == 'cpu' and data['tiny'] and data['train_rows'] == []
    table = [ln for ln in md.splitlines() if ln.startswith('| ') and ln[2:5] in ('dit', 'dov',
                                                                                  'dvt')]
    assert len(table) == len(rows)
    for r, ln in zip(rows, table):
        h, d = r['host'], r['dynamic']
        assert r['timed_calls'] == 2 and h['latency_ms_median'] > 0 and d['latency_ms_median'] > 0
        # consistent with itself
        assert r['speedup'] == pytest.approx(h['latency_ms_median'] / d['latency_ms_median'])
        assert r['flops_ratio'] == pytest.approx(d['gflops_realised'] / h['gflops_realised'])
        assert r['efficiency'] == pytest.approx(r['speedup'] * r['flops_ratio'])
        assert h['throughput_img_s'] == pytest.approx(2 / (h['latency_ms_median'] / 1e3))
        # the table holds the JSON's numbers
        cells = [c.strip() for c in ln.strip('|').split('|')]
        assert cells[0] == r['method'] and cells[2] == '2'
        assert cells[3] == f'{h["latency_ms_median"]:.2f} ({h["latency_ms_iqr"]:.2f})'
        assert cells[4] == f'{d["latency_ms_median"]:.2f} ({d["latency_ms_iqr"]:.2f})'
        assert cells[7] == f'{h["gflops_realised"]:.4f}'
        assert cells[8] == f'{d["gflops_realised"]:.4f}'
        assert cells[9:12] == [f'{r["flops_ratio"]:.3f}', f'{r["speedup"]:.3f}',
                             f'{r["efficiency"]:.3f}']


def test_flops_ratios_equal_model_records(result):
    _, data, _ = result
    by = {r['method']: r for r in data['rows']}
    tiny = osp.join(REPO, 'configs', '_tiny_')
    # DiT: forced keep ratio 0.5 on the PVTv2 path vs the same model at ratio 1
    cfg = osp.join(tiny, 'fpn_dit-tiny_toy-ade20k.py')
    # (the constructor's decision_override here, the suite's override_decisions block there)
    key = 'model.backbone.decision_override'
    dyn = _backbone_gflops(cfg, {key: dict(keep_ratio=0.5, columns='pvt')}, (64, 64), 2)
    host = _backbone_gflops(cfg, {key: dict(keep_ratio=1.0, columns='pvt')}, (64, 64), 2)
    assert dyn < host
    assert by['dit']['dynamic']['gflops_realised'] == pytest.approx(dyn, rel=1e-9)
    assert by['dit']['host']['gflops_realised'] == pytest.approx(host, rel=1e-9)
    assert by['dit']['flops_ratio'] == pytest.approx(dyn / host, rel=1e-9)
    # DoViT: half the tokens kept after each decision layer
    cfg = osp.join(tiny, 'setr_dovit-tiny_toy-ade20k.py')
    dyn = _backbone_gflops(cfg, {key: dict(keep_ratios=[0.5, 0.5])}, (64, 64), 2)
    host = _backbone_gflops(cfg, {key: dict(keep_ratios=[1., 1.])}, (64, 64), 2)
    assert by['dovit']['flops_ratio'] == pytest.approx(dyn / host, rel=1e-9) and dyn < host
    # DVT: one of the two images stops at the first exit; the cascade's own per-image records
    r = by['dvt']
    assert r['exit_share_realised'] == 0.5
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    cfg = load_config(osp.join(tiny, 'dvt-tiny_toy-imagenet.py'))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    cum = torch.tensor(model.exit_flops(), dtype=torch.float64).cumsum(0)
    # one image ran exit 1 only, the other every exit; the host (no early exit) every exit
    assert r['dynamic']['gflops_realised'] == pytest.approx(
        float(cum[0] + cum[-1]) / 2 / 1e9, rel=1e-9)
    assert r['host']['gflops_realised'] == pytest.approx(float(cum[-1]) / 1e9, rel=1e-9)


def test_plot_is_png(result):
    out_dir, _, _ = result
    with open(out_dir / 'suite.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('bad, words', [
    (['--levels', '0'], 'fraction in (0, 1]'),
    (['--batches', '0'], 'must be >= 1'),
    (['--methods', 'nope'], 'invalid choice'),
    (['--amp', 'fp16'], 'needs --device cuda'),
    (['--warmup', '-1'], '--warmup must be >= 0'),
])
def test_bad_arguments_one_line(bad, words, capsys):
    assert suite.main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and err.startswith('error: ') and words in err


def test_cuda_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import torch
    # a machine without CUDA (also on one that has it: the check must not depend on it)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert suite.main(['--device', 'cuda', '--tiny', '--out-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'error: --device cuda: CUDA is not available'


def test_training_rows(tmp_path):
    """--train (without --quick) adds a training step row per method (no peak memory on the
    CPU); --quick leaves it out."""
    base = ['--tiny', '--methods', 'msvit', '--levels', '0.5', '--batches', '2', '--rounds', '1',
            '--warmup', '0', '--train']
    assert suite.main(base + ['--out-dir', str(tmp_path / 'a')]) == 0
    data = json.loads((tmp_path / 'a' / 'suite.json').read_text())
    (tr,) = data['train_rows']
    assert tr['method'] == 'msvit' and tr['batch'] == 2
    assert tr['host']['step_ms_median'] > 0 and tr['dynamic']['step_ms_median'] > 0
    assert tr['host']['peak_mem_mib'] is None
    assert tr['train_speedup'] == pytest.approx(
        tr['host']['step_ms_median'] / tr['dynamic']['step_ms_median'])
    assert f'{tr["train_speedup"]:.3f}' in (tmp_path / 'a' / 'suite.md').read_text()
    assert suite.main(base + ['--quick', '--out-dir', str(tmp_path / 'b')]) == 0
    assert json.loads((tmp_path / 'b' / 'suite.json').read_text())['train_rows'] == []
