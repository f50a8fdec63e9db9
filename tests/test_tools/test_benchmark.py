"""tools/analysis_tools/benchmark.py: latency statistics, one config and two side by side."""
import importlib.util
import json
import os.path as osp
import textwrap

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASELINES = osp.join(REPO, 'configs', 'baselines')

spec = importlib.util.spec_from_file_location(
    '_mmdyn_tool_benchmark', osp.join(REPO, 'tools', 'analysis_tools', 'benchmark.py'))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

ROW_KEYS = ('config', 'timed', 'device', 'batch', 'shape', 'input_shape', 'repeats', 'warmup',
            'latency_ms_median', 'latency_ms_iqr', 'latency_ms_std', 'latency_ms_mean',
            'latency_ms_min', 'latency_ms_max', 'throughput_img_s')


@pytest.fixture(autouse=True)
def pins(monkeypatch):
    """The calls of ``pin_glibc_malloc`` (recorded, not made: the test process keeps its own
    malloc settings)."""
    calls = []

    def fake():
        calls.append(1)
        return 'glibc, every freed buffer kept for reuse (no mmap, no trim; set by the suite)'

    monkeypatch.setattr(bench, 'pin_glibc_malloc', fake)
    return calls


def tiny_seg_config(tmp_path, name, depths):
    cfg = tmp_path / name
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{osp.join(BASELINES, 'fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py')}'
        model = dict(
            backbone=dict(arch=dict(_delete_=True, embed_dims=[8, 16, 16, 32], depths={depths},
                                    num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2],
                                    sr_ratios=[8, 4, 2, 1])),
            neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
            decode_head=dict(in_channels=[16, 16, 16, 16], channels=8))
    """))
    return str(cfg)


def test_latency_stats():
    s = bench.latency_stats([0.004, 0.001, 0.003, 0.002, 0.005], batch=2)
    assert s['latency_ms_median'] == pytest.approx(3.0)
    assert s['latency_ms_q1'] == pytest.approx(2.0) and s['latency_ms_q3'] == pytest.approx(4.0)
    assert s['latency_ms_iqr'] == pytest.approx(2.0)
    assert s['latency_ms_std'] == pytest.approx(1.5811, rel=1e-3)
    assert s['latency_ms_min'] == pytest.approx(1.0) and s['latency_ms_max'] == pytest.approx(5)
    assert s['throughput_img_s'] == pytest.approx(2 / 0.003)
    one = bench.latency_stats([0.01], batch=1)
    assert one['latency_ms_iqr'] == 0 and one['latency_ms_std'] == 0


def test_time_calls_counts_calls():
    calls = []
    times = bench.time_calls(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)


def test_one_config(tmp_path, capsys):
    cfg = tiny_seg_config(tmp_path, 'a.py', [1, 1, 1, 1])
    args = bench.parse_args([cfg, '--shape', '64', '--repeats', '3', '--warmup', '1',
                             '--batch', '2', '--json'])
    assert bench.main([cfg, '--shape', '64', '--repeats', '3', '--warmup', '1', '--batch', '2',
                       '--json']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['device'] == 'cpu' and len(out['rows']) == 1 and 'speedup' not in out
    row = out['rows'][0]
    for k in ROW_KEYS:
        assert k in row
    assert row['timed'] == 'tensor' and row['batch'] == 2 and row['input_shape'] == [64, 64]
    assert row['latency_ms_median'] > 0 and row['latency_ms_iqr'] >= 0
    assert row['throughput_img_s'] == pytest.approx(2 / (row['latency_ms_median'] / 1e3))
    assert row['latency_ms_min'] <= row['latency_ms_median'] <= row['latency_ms_max']
    assert args.repeats == 3


def test_compare_two_rows(tmp_path, capsys):
    small = tiny_seg_config(tmp_path, 'small.py', [1, 1, 1, 1])
    big = tiny_seg_config(tmp_path, 'big.py', [2, 2, 2, 2])
    out = bench.run(bench.parse_args([small, '--compare', big, '--shape', '64', '--repeats', '2',
                                      '--warmup', '1', '--backbone-only']))
    assert [r['config'] for r in out['rows']] == [small, big]
    assert all(r['timed'] == 'backbone' for r in out['rows'])
    assert out['speedup'] == pytest.approx(
        out['rows'][0]['latency_ms_median'] / out['rows'][1]['latency_ms_median'])
    text = bench.format_text(out)
    assert text.count('small.py') == 1 and text.count('big.py') == 1 and 'speedup' in text
    assert bench.main([small, '--compare', big, '--shape', '32', '--repeats', '1', '--warmup',
                       '0', '--mode', 'predict']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum('predict' in ln for ln in lines) == 2
    # the FLOPs of a predict row are the tensor-mode forward's, and the table says so
    assert 'tensor-mode forward of the timed batch' in lines[-1]
    assert [r['flops_of'] for r in out['rows']] == ['backbone', 'backbone']



def test_compare_alternates_the_two_models(tmp_path, monkeypatch):
    """``--compare`` times the two models in alternating rounds (A B, B A, A B), after the
    warm-up calls of each, not one model's calls and then the other's."""
    import mmdyn.analysis.benchmarking as benchmarking
    small = tiny_seg_config(tmp_path, 'small.py', [1, 1, 1, 1])
    big = tiny_seg_config(tmp_path, 'big.py', [2, 2, 2, 2])
    order = []
    real = benchmarking.alternating_times

    def spy(fns, *a, **k):
        def tagged(i, fn):
            def call():
                order.append('AB'[i])
                return fn()
            return call
        return real([tagged(i, f) for i, f in enumerate(fns)], *a, **k)

    monkeypatch.setattr(benchmarking, 'alternating_times', spy)
    out = bench.run(bench.parse_args([small, '--compare', big, '--shape', '32', '--repeats', '3',
                                      '--warmup', '1', '--backbone-only']))
    assert ''.join(order) == 'AB' + 'AB' + 'BA' + 'AB'
    assert [r['repeats'] for r in out['rows']] == [3, 3]

def test_flops_next_to_times(tmp_path, capsys, repo_root):
    """Each row carries the FLOPs of what it timed; the comparison gives the FLOPs ratio and the
    efficiency speedup x ratio. The same dynamic config (tiny DGE-PVT) with every region forced
    to the finest granularity, against all regions forced to the coarsest, via the per-config
    options (the constructor's ``decision_override``) and via ``--override``."""
    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    from mmdyn.analysis.complexity import model_complexity
    cfg = osp.join(repo_root, 'configs', '_quickstart_',
                   'fpn_dge-pvt-tiny_1xb8-300iter_toy-ade20k-128x128.py')
    out = bench.run(bench.parse_args([
        cfg, '--compare', cfg, '--shape', '64', '--repeats', '2', '--warmup', '0',
        '--backbone-only', '--config-options',
        'model.backbone.decision_override.fractions=[1,0,0]',
        '--compare-options', 'model.backbone.decision_override.fractions=[0,0,1]']))
    fine, coarse = out['rows']
    assert fine['is_dynamic'] and coarse['is_dynamic']
    assert fine['gflops_static'] == pytest.approx(coarse['gflops_static'])
    assert coarse['gflops_realised'] < fine['gflops_realised']
    # independent count: the same forced model's realised backbone FLOPs
    c = load_config(cfg, {'model.backbone.decision_override': dict(fractions=[0, 0, 1])})
    model = build_model_from_cfg(c)
    x, s = generated_batch(model, (64, 64), 1)
    ref = model_complexity(model, inputs=x, data_samples=s, backbone_only=True)
    assert coarse['gflops_realised'] == pytest.approx(float(ref['flops_dynamic'][0]) / 1e9)
    assert fine['decision_override'] is None  # set by the config, not by --override
    # --override forces the same decisions on the built model (override_decisions)
    over = bench.run(bench.parse_args([
        cfg, '--shape', '64', '--repeats', '1', '--warmup', '0', '--backbone-only',
        '--override', 'fractions=[0,0,1]']))['rows'][0]
    assert over['decision_override'] == dict(fractions=[0, 0, 1])
    assert over['gflops_realised'] == pytest.approx(coarse['gflops_realised'], rel=1e-12)
    ratio = coarse['gflops_realised'] / fine['gflops_realised']
    assert out['flops_ratio'] == pytest.approx(ratio)
    assert out['ideal_speedup'] == pytest.approx(1 / ratio)
    assert out['efficiency'] == pytest.approx(out['speedup'] * ratio)
    text = bench.format_text(out)
    assert 'efficiency' in text and f'{coarse["gflops_realised"]:.3f}' in text
    # a static config: realised = static
    static = tiny_seg_config(tmp_path, 'static.py', [1, 1, 1, 1])
    row = bench.run(bench.parse_args([static, '--shape', '64', '--repeats', '1', '--warmup',
                                      '0']))['rows'][0]
    assert not row['is_dynamic'] and row['gflops_realised'] == row['gflops_static'] > 0
    assert bench.main([static, '--compare-options', 'model.pretrained=None']) == 1
    assert 'needs --compare' in capsys.readouterr().err
    assert bench.main([static, '--shape', '64', '--repeats', '1', '--warmup', '0',
                       '--override', 'keep_ratio=0.5']) == 1
    assert 'no model here takes a decision override' in capsys.readouterr().err


def test_errors(tmp_path, capsys):
    assert bench.main([str(tmp_path / 'missing.py')]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'config file not found' in err
    with pytest.raises(SystemExit):
        bench.parse_args(['x.py', '--batch', '0'])


def test_cuda_device(tmp_path, capsys):
    """--device cuda runs where CUDA is, and says clearly that it is missing elsewhere."""
    import torch
    cfg = tiny_seg_config(tmp_path, 'a.py', [1, 1, 1, 1])
    rc = bench.main([cfg, '--device', 'cuda', '--shape', '32', '--repeats', '2', '--warmup', '1',
                     '--json'])
    out, err = capsys.readouterr()
    if torch.cuda.is_available():
        assert rc == 0
        row = json.loads(out)['rows'][0]
        assert row['device'] == 'cuda' and row['latency_ms_median'] > 0
    else:
        assert rc == 1 and err.strip() == 'error: --device cuda: CUDA is not available'


def test_cpu_runs_keep_every_buffer_unless_asked(tmp_path, pins, capsys):
    """On the CPU the tool sets the suite's allocator state and names it; ``--system-malloc``
    leaves glibc alone and names what it runs with."""
    cfg = tiny_seg_config(tmp_path, 'a.py', [1, 1, 1, 1])
    common = [cfg, '--shape', '32', '--repeats', '1', '--warmup', '0', '--backbone-only']
    out = bench.run(bench.parse_args(common))
    assert pins == [1]
    assert out['allocator'].startswith('glibc, every freed buffer kept for reuse')
    assert bench.main(common) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith('host allocator glibc, every freed buffer kept for reuse (no mmap, '
                          'no trim; set by the suite)')
    pins.clear()
    out = bench.run(bench.parse_args(common + ['--system-malloc']))
    assert pins == [] and out['allocator'] == bench.allocator_note()



def test_compile_times_the_compiled_call(tmp_path, capsys):
    """--compile: the timed call is the dynamo-compiled one (a graph was traced for it), the
    compiling first call is reported apart, the FLOPs are those of the same model in eager."""
    import torch._dynamo as dynamo
    cfg = tiny_seg_config(tmp_path, 'a.py', [1, 1, 1, 1])
    argv = [cfg, '--shape', '64', '--repeats', '1', '--warmup', '0', '--backbone-only']
    eager = bench.run(bench.parse_args(argv))['rows'][0]
    dynamo.reset()
    try:
        before = dynamo.utils.counters['stats']['unique_graphs']
        out = bench.run(bench.parse_args(argv + ['--compile', 'eager']))
        row = out['rows'][0]
        assert dynamo.utils.counters['stats']['unique_graphs'] > before
        assert row['compile'] == 'eager' and row['compile_s'] > 0
        assert eager['compile'] is None and eager['compile_s'] is None
        assert row['gflops_realised'] == pytest.approx(eager['gflops_realised'], rel=1e-12)
        assert row['latency_ms_median'] > 0
        assert 'torch.compile(eager, dynamic shapes)' in bench.format_text(out)
        assert bench.parse_args([cfg, '--compile']).compile == 'inductor'
        with pytest.raises(SystemExit):
            bench.parse_args([cfg, '--compile', 'tvm'])
    finally:
        dynamo.reset()  # no compiled state left for later tests
