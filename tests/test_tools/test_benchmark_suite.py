"""tools/analysis_tools/benchmark_suite.py at tiny sizes on the CPU: it runs, its Markdown table
and JSON hold the numbers it measured, its FLOPs ratios equal the models' own records, the
reference is the candidate input closest in FLOPs, the DVT sequence at batch 1 stops the
requested share, the profile names ops, the plot is a PNG, and bad arguments give one line.
Never its speed."""
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


def _backbone_gflops_at(config, options, shape, batch):
    """Realised backbone GFLOPs per image of the config's model on a random ``[batch, 3, *shape]``
    input, straight from the backbone's records (the forced decisions do not depend on the
    content)."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    model = build_model_from_cfg(load_config(config, options))
    x = torch.randn(batch, 3, *shape)
    model.backbone.last_flops = None
    with torch.no_grad():
        model.backbone(x)
    flops = model.backbone.last_flops
    if flops is None:
        return float(model.backbone.static_flops(tuple(shape))) / 1e9
    return float(flops.double().mean()) / 1e9


def _table_rows(md, methods):
    return [[c.strip() for c in ln.strip('|').split('|')] for ln in md.splitlines()
            if ln.startswith('| ') and ln.split('|')[1].strip() in methods]


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('suite')
    rc = suite.main(ARGS + ['--methods', 'dge', 'dit', 'dovit', 'dvt', '--out-dir',
                            str(out_dir)])
    assert rc == 0
    with open(out_dir / 'suite.json') as f:
        data = json.load(f)
    return out_dir, data, (out_dir / 'suite.md').read_text()


def test_runs_and_table_matches_json(result):
    out_dir, data, md = result
    rows = data['rows']
    assert [(r['method'], r['level'], r['batch']) for r in rows] == [
        ('dge', 0.5, 2), ('dit', 0.5, 2), ('dovit', 0.5, 2), ('dvt', 0.5, 2)]
    assert data['device'] == 'cpu' and data['tiny'] and data['train_rows'] == []
    table = [ln for ln in md.splitlines() if ln.startswith('| ') and ln[2:5] in ('dge', 'dit',
                                                                                  'dov', 'dvt')]
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

    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    cfg = load_config(osp.join(tiny, 'dvt-tiny_toy-imagenet.py'))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    cum = torch.tensor(model.exit_flops(), dtype=torch.float64).cumsum(0)
    # one image ran exit 1 only, the other every exit; the host (no early exit) every exit
    assert r['dynamic']['gflops_realised'] == pytest.approx(
        float(cum[0] + cum[-1]) / 2 / 1e9, rel=1e-9)
    assert r['host']['gflops_realised'] == pytest.approx(float(cum[-1]) / 1e9, rel=1e-9)


def test_reference_is_the_closest_candidate(result):
    """The reference input: among the sizes with sides multiples of the host's stride (32 for the
    PVT hosts, the patch size 16 for the ViT host) up to 64 and aspect within 2:1, the one whose
    host FLOPs (computed here from the backbone's own records) are closest to the dynamic
    model's; the reference's recorded FLOPs are the host's at that size."""
    _, data, _ = result
    tiny = osp.join(REPO, 'configs', '_tiny_')
    key = 'model.backbone.decision_override'
    hosts = {  # the suite's tiny hosts: the dynamic model at full budget
        'dge': ('fpn_dge-pvt-tiny_toy-ade20k.py', dict(fractions=[1., 0., 0.]), 32),
        'dit': ('fpn_dit-tiny_toy-ade20k.py', dict(keep_ratio=1.0, columns='pvt'), 32),
        'dovit': ('setr_dovit-tiny_toy-ade20k.py', dict(keep_ratios=1.0), 16),
    }
    chosen = set()
    for r in data['rows']:
        if r['method'] == 'dvt':
            continue
        name, override, stride = hosts[r['method']]
        sides = range(stride, 65, stride)
        cands = [(h, w) for h in sides for w in sides if max(h, w) <= 2 * min(h, w)]
        flops = {c: _backbone_gflops_at(osp.join(tiny, name), {key: override}, c, 2)
                 for c in cands}
        target = r['dynamic']['gflops_realised']
        best = min(abs(f - target) for f in flops.values())
        ref = tuple(r['ref']['shape'])
        assert ref in flops
        assert abs(flops[ref] - target) == pytest.approx(best, rel=1e-9, abs=1e-15)
        assert r['ref']['gflops_realised'] == pytest.approx(flops[ref], rel=1e-9)
        assert r['host']['gflops_realised'] == pytest.approx(flops[(64, 64)], rel=1e-9)
        chosen.add(ref)
    assert chosen != {(64, 64)}  # some row's reference is a smaller input


def test_reference_formulas_and_table(result):
    """ref_flops_ratio, ref_efficiency and dyn_vs_ref from the recorded medians and FLOPs; the
    table's ref columns hold them; the tiny DVT (a cascade whose FLOPs do not depend on the
    input size) has none, and says why."""
    _, data, md = result
    assert data['ref'] is True
    header = [c.strip() for c in md.splitlines()[2].strip('|').split('|')]
    assert header[12:] == ['ref input', 'ref ms (IQR)', 'ref GFLOPs', 'ref efficiency',
                           'dynamic / ref']
    table = _table_rows(md, ('dge', 'dit', 'dovit', 'dvt'))
    assert len(table) == len(data['rows'])
    for r, cells in zip(data['rows'], table):
        assert len(cells) == 17
        if r['method'] == 'dvt':
            assert r['ref'] is None and 'do not depend on the input size' in r['ref_note']
            assert cells[12:] == ['-'] * 5
            continue
        h, d, f = r['host'], r['dynamic'], r['ref']
        hm, dm, fm = (x['latency_ms_median'] for x in (h, d, f))
        assert f['latency_ms_median'] > 0 and len(f['shape']) == 2
        assert r['ref_flops_ratio'] == pytest.approx(f['gflops_realised'] / h['gflops_realised'])
        assert r['ref_efficiency'] == pytest.approx(hm / fm * r['ref_flops_ratio'])
        assert r['dyn_vs_ref'] == pytest.approx(fm / dm * d['gflops_realised']
                                                / f['gflops_realised'])
        assert f['throughput_img_s'] == pytest.approx(2 / (fm / 1e3))
        assert cells[12:] == [f'{f["shape"][0]}x{f["shape"][1]}',
                              f'{fm:.2f} ({f["latency_ms_iqr"]:.2f})',
                              f'{f["gflops_realised"]:.4f}', f'{r["ref_efficiency"]:.3f}',
                              f'{r["dyn_vs_ref"]:.3f}']
    assert 'No ref: dvt: ' in md


def test_no_ref_drops_the_reference(tmp_path):
    out = tmp_path / 'noref'
    assert suite.main(['--tiny', '--methods', 'msvit', '--levels', '0.5', '--batches', '1',
                       '--rounds', '1', '--warmup', '0', '--no-ref', '--out-dir',
                       str(out)]) == 0
    data = json.loads((out / 'suite.json').read_text())
    md = (out / 'suite.md').read_text()
    assert data['ref'] is False
    (r, ) = data['rows']
    assert not {'ref', 'ref_note', 'ref_flops_ratio', 'ref_efficiency', 'dyn_vs_ref'} & set(r)
    assert 'ref' not in md.splitlines()[2] and 'ref:' not in md
    (cells, ) = _table_rows(md, ('msvit', ))
    assert len(cells) == 12


def test_dvt_reference_rebuilds_the_t2t_host():
    """Full-size DVT: the host, T2T-ViT-12, takes one (square) input size, so the reference is
    the same classifier rebuilt for a smaller square side with the host's weights; the side is
    the one whose FLOPs (the backbone's analytic count plus the linear head) are closest. Built
    at 64x64 here so that the one forward is tiny."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    h_cfg, _, _, _, _, timed = suite.FULL['dvt']
    key = suite.REF['dvt']['rebuild']
    args = suite.parse_args(['--methods', 'dvt'])
    _, host = suite._build(h_cfg, {key: 64}, 'cpu')
    ref = suite._RefHost(args, host, timed, (64, 64), suite.REF['dvt']['stride'], key, h_cfg,
                         {key: 64})
    assert ref.candidates == [(16, 16), (32, 32), (48, 48), (64, 64)]

    def gflops(side):
        m = build_model_from_cfg(load_config(h_cfg, {key: side}))
        head = sum(lin.in_features * lin.out_features for lin in m.head.modules()
                   if isinstance(lin, torch.nn.Linear))
        return (m.backbone.static_flops() + head) / 1e9
    g = {s: gflops(s) for s in (16, 32, 48, 64)}
    target = g[32] + 0.4 * (g[48] - g[32])  # nearer 32 than 48
    assert ref.choose(target, None, False) == (32, 32)
    assert ref.gflops((32, 32), None, False) == pytest.approx(g[32], rel=1e-9)
    m = ref.model((32, 32))
    assert m.backbone.img_size == 32 and m is not host
    for (k, a), (k2, b) in zip(m.state_dict().items(), host.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32), None, mode='tensor').shape == (1, 1000)


@pytest.fixture(scope='module')
def seq_result(tmp_path_factory):
    """DVT at batch 1 as a sequence of 6 images (level 0.25: round(1.5) = 2 stop at exit 1),
    and MSViT, both profiled."""
    out_dir = tmp_path_factory.mktemp('seq')
    rc = suite.main(['--tiny', '--methods', 'dvt', 'msvit', '--levels', '0.25', '--batches',
                     '1', '--dvt-seq', '6', '--rounds', '1', '--warmup', '0', '--profile',
                     '--out-dir', str(out_dir)])
    assert rc == 0
    data = json.loads((out_dir / 'suite.json').read_text())
    return out_dir, data, (out_dir / 'suite.md').read_text()


def test_dvt_sequence_at_batch_1(seq_result):
    """The realised share is round(level x N) / N of the N single-image calls, the dynamic
    FLOPs the mean of the per-image records (recomputed here with the recorded thresholds on
    the same generated images, one call each)."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    _, data, md = seq_result
    r = next(r for r in data['rows'] if r['method'] == 'dvt')
    n = 6
    assert r['batch'] == 1 and r['dvt_seq'] == n and data['dvt_seq'] == n
    assert r['exit_share_realised'] == round(0.25 * n) / n == 2 / 6
    cfg = load_config(osp.join(REPO, 'configs', '_tiny_', 'dvt-tiny_toy-imagenet.py'))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    model.set_thresholds(r['dvt_thresholds'])
    x, _ = generated_batch(model, (64, 64), n)
    exits, per_image = [], []
    with torch.no_grad():
        for i in range(n):
            _, idx, _ = model.early_exit(x[i:i + 1])
            exits.append(int(idx))
            per_image.append(float(model.last_flops.sum()) / 1e9)
    assert sum(e == 0 for e in exits) / n == r['exit_share_realised']
    assert r['dynamic']['gflops_per_image'] == pytest.approx(per_image, rel=1e-9)
    assert r['dynamic']['gflops_realised'] == pytest.approx(sum(per_image) / n, rel=1e-9)
    cum = model.cumulative_flops()
    assert r['host']['gflops_realised'] == pytest.approx(cum[-1] / 1e9, rel=1e-9)
    assert r['flops_ratio'] == pytest.approx((2 * cum[0] + 4 * cum[-1]) / 6 / cum[-1])
    (cells, ) = _table_rows(md, ('dvt', ))
    assert cells[2] == '1 (seq 6)'
    assert 'dvt batch 1 (seq N)' in md


def _check_dvt_exits(r, md, n_images):
    """The static-exits figures of one DVT row: the cascade's FLOPs equal the dynamic model's
    record, exit 1's the first exit's count; the efficiencies follow from the recorded medians;
    the exits table holds them."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    cfg = load_config(osp.join(REPO, 'configs', '_tiny_', 'dvt-tiny_toy-imagenet.py'))
    gf = [f / 1e9 for f in build_model_from_cfg(cfg).exit_flops()]
    h, d, e = r['host'], r['dynamic'], r['dvt_exits']
    c, x1 = e['cascade'], e['exit1']
    assert c['gflops_realised'] == pytest.approx(d['gflops_realised'], rel=1e-9)
    assert x1['gflops_realised'] == pytest.approx(gf[0], rel=1e-9)
    assert c['latency_ms_median'] > 0 and x1['latency_ms_median'] > 0
    hm = h['latency_ms_median']
    assert e['cascade_efficiency'] == pytest.approx(
        hm / c['latency_ms_median'] * c['gflops_realised'] / h['gflops_realised'])
    assert e['exit1_efficiency'] == pytest.approx(
        hm / x1['latency_ms_median'] * gf[0] / h['gflops_realised'])
    assert e['dyn_vs_cascade'] == pytest.approx(c['latency_ms_median']
                                                / d['latency_ms_median'])
    lines = md.splitlines()
    head = lines.index(next(ln for ln in lines if ln.startswith('| exit share |')))
    cells = [x.strip() for x in lines[head + 2].strip('|').split('|')]
    batch = f'{r["batch"]}' + (f' (seq {n_images})' if r.get('dvt_seq') else '')
    assert cells == [f'{r["level"]:.2f}', batch, f'{r["efficiency"]:.3f}',
                     f'{c["latency_ms_median"]:.2f} ({c["latency_ms_iqr"]:.2f})',
                     f'{e["cascade_efficiency"]:.3f}', f'{e["dyn_vs_cascade"]:.3f}',
                     f'{x1["latency_ms_median"]:.2f} ({x1["latency_ms_iqr"]:.2f})',
                     f'{gf[0]:.4g}', f'{e["exit1_efficiency"]:.3f}']
    assert "DVT's exits as static models" in md


def test_dvt_static_exits_rows(result, seq_result):
    """DVT rows (batch 2, and the batch-1 sequence) carry the static cascade and exit 1 alone,
    timed in the same rounds; other methods do not."""
    _, data, md = result
    for r in data['rows']:
        assert ('dvt_exits' in r) == (r['method'] == 'dvt')
    _check_dvt_exits(next(r for r in data['rows'] if r['method'] == 'dvt'), md, 2)
    _, data, md = seq_result
    _check_dvt_exits(next(r for r in data['rows'] if r['method'] == 'dvt'), md, 6)


@pytest.mark.parametrize('seq', [False, True])
@pytest.mark.parametrize('shares,counts', [(0.4, (2, 0, 3)), ([0.2, 0.4], (1, 2, 2))])
def test_static_cascade_runs_what_the_dynamic_model_ran(seq, shares, counts):
    """The static cascade runs each exit on the images the early-exit forward sent to it, in the
    same order and with the same reuse state: every exit's inputs and logits equal the dynamic
    run's (a batch of 5 images stopping at the three exits as ``counts``, or the same 5 as
    single-image calls); exit 1 alone runs the first exit once on every image."""
    import torch

    from mmdyn.analysis.complexity import build_model_from_cfg, generated_batch, load_config
    cfg = load_config(osp.join(REPO, 'configs', '_tiny_', 'dvt-tiny_toy-imagenet.py'))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg).eval()
    x, _ = generated_batch(model, (64, 64), 5)
    assert model.num_exits == 3
    share, exit_idx = suite._dvt_set_share(model, x, shares, single=seq)
    assert share == counts[0] / 5 and [exit_idx.count(k) for k in range(3)] == list(counts)
    seen = []
    hooks = [e.register_forward_hook(
        lambda mod, args, out, k=k: seen.append((k, args[0].clone(), out[0].clone())))
        for k, e in enumerate(model.exits)]
    try:
        with torch.no_grad():
            for i in (range(5) if seq else [slice(None)]):
                model.early_exit(x[i:i + 1] if seq else x)
            dynamic, seen[:] = list(seen), []
            units = dict((name, fn) for name, fn, _ in
                         suite._dvt_exit_units(model, x, exit_idx, seq))
            units['cascade']()
            cascade, seen[:] = list(seen), []
            units['exit1']()
            first = list(seen)
    finally:
        for h in hooks:
            h.remove()
    # exit calls: one per image and exit it reached (seq), or one per exit that any reached
    assert len(cascade) == len(dynamic) == (sum(k + 1 for k in exit_idx) if seq else 3)
    for (k, xa, la), (k2, xb, lb) in zip(dynamic, cascade):
        assert k == k2 and torch.equal(xa, xb)
        torch.testing.assert_close(la, lb, rtol=0, atol=0)
    assert [k for k, _, _ in first] == [0] * (5 if seq else 1)
    assert torch.equal(torch.cat([xi for _, xi, _ in first]), x)


def test_profile(seq_result):
    """profile.md: per method the host, the dynamic model (and the reference where there is
    one), each with its top ops by self CPU time; the shares sum to at most 100 %."""
    out_dir, data, _ = seq_result
    text = (out_dir / 'profile.md').read_text()
    profiles = {p['method']: p for p in data['profiles']}
    assert set(profiles) == {'dvt', 'msvit'}
    assert [m['model'] for m in profiles['dvt']['models']] == ['host', 'dynamic']
    assert [m['model'] for m in profiles['msvit']['models']] == ['host', 'dynamic', 'ref']
    assert profiles['dvt']['dvt_seq'] == 6 and profiles['dvt']['level'] == 0.5
    assert profiles['dvt']['exit_share_realised'] == 0.5 and profiles['msvit']['batch'] == 1
    sections = text.split('\n## ')[1:]
    assert [s.split(':')[0] for s in sections] == ['dvt', 'msvit']
    for sec, p in zip(sections, data['profiles']):
        blocks = sec.split('\n**')[1:]
        assert len(blocks) == len(p['models'])
        for block, m in zip(blocks, p['models']):
            assert block.startswith(m['model'] + '**')
            assert f'{m["dispatches_per_call"]:.0f} operator dispatches per call' in block
            assert m['dispatches_per_call'] > 10
            assert m['device_busy_ms_total'] is None and 'GPU busy' not in block  # CPU run
            rows = [[c.strip() for c in ln.strip('|').split('|')] for ln in block.splitlines()
                    if ln.startswith('| ') and not ln.startswith(('| op ', '| --- '))]
            assert 0 < len(rows) == len(m['ops']) <= suite.PROFILE_TOP
            assert sum(o['percent'] for o in m['ops']) <= 100. + 1e-9
            assert sum(float(c[3]) for c in rows) <= 100. + 0.005 * len(rows)
            for c, o in zip(rows, m['ops']):
                assert c[0] and c[0] == o['op'].replace('|', '/')
                assert c[1:] == [str(o['calls']), f'{o["self_ms"]:.3f}', f'{o["percent"]:.2f}']
                assert o['calls'] >= 1 and o['self_ms'] > 0
            # sorted by self time, each a share of the model's total
            assert [o['self_ms'] for o in m['ops']] == sorted(
                (o['self_ms'] for o in m['ops']), reverse=True)
            for o in m['ops']:
                assert o['percent'] == pytest.approx(100 * o['self_ms'] / m['self_cpu_ms_total'])
    assert any(o['op'].startswith('aten::') for p in data['profiles'] for m in p['models']
               for o in m['ops'])


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
    (['--dvt-seq', '0'], 'argument --dvt-seq: must be >= 1, got 0'),
    (['--min-seconds', '-1'], '--min-seconds must be >= 0'),
])
def test_bad_arguments_one_line(bad, words, capsys):
    assert suite.main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and err.startswith('error: ') and words in err


def test_glibc_malloc_is_pinned_only_where_glibc_runs_with_its_defaults(monkeypatch):
    """The suite makes glibc keep every freed buffer (no mmap, no trim below 2 GiB); not where
    the user set MALLOC_* variables, preloaded another allocator, or there is no glibc (a fake
    libc records the calls)."""
    import ctypes
    calls = []

    class FakeLibc:
        def __init__(self, name):
            assert name is None

        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, 'CDLL', FakeLibc)
    monkeypatch.setattr(suite.sys, 'platform', 'linux')
    note = suite.pin_glibc_malloc({})
    assert calls == [(-4, 0), (-1, 2 ** 31 - 1)]  # M_MMAP_MAX, M_TRIM_THRESHOLD
    assert note == 'glibc, every freed buffer kept for reuse (no mmap, no trim; set by the suite)'
    calls.clear()
    # the user's settings, in any of glibc's spellings, or a preloaded library: left alone
    for env, note in [
            ({'MALLOC_ARENA_MAX': '2'}, 'glibc MALLOC_ARENA_MAX=2'),
            ({'MALLOC_MMAP_MAX_': '0'}, 'glibc MALLOC_MMAP_MAX_=0'),
            ({'GLIBC_TUNABLES': 'glibc.rtld.nns=2:glibc.malloc.trim_threshold=131072'},
             'glibc GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072'),
            ({'LD_PRELOAD': '/usr/lib/libtcmalloc.so'}, 'tcmalloc (LD_PRELOAD)'),
            ({'LD_PRELOAD': '/usr/lib/libtbbmalloc_proxy.so.2'}, 'tbbmalloc (LD_PRELOAD)'),
            ({'LD_PRELOAD': '/opt/libfoo.so'}, 'glibc LD_PRELOAD=/opt/libfoo.so')]:
        assert suite.allocator_note(env) == note
        assert suite.pin_glibc_malloc(env) is None
    assert suite.allocator_note({'GLIBC_TUNABLES': 'glibc.rtld.nns=2'}) == 'glibc defaults'
    assert calls == []
    monkeypatch.setattr(suite.sys, 'maxsize', 2 ** 31 - 1)  # 32-bit: another maximum
    assert suite.pin_glibc_malloc({}) is None and calls == []
    monkeypatch.setattr(suite.sys, 'maxsize', 2 ** 63 - 1)
    FakeLibc.mallopt = lambda self, param, value: 0  # refused: nothing claimed
    assert suite.pin_glibc_malloc({}) is None
    monkeypatch.setattr(suite.sys, 'platform', 'darwin')
    assert suite.pin_glibc_malloc({}) is None


def test_min_seconds_defaults():
    """Full-size rows run rounds until 8 s (CPU) / 2 s (CUDA) of timed calls; --quick and the
    tiny logic configs only the rounds asked for; a given value wins."""
    assert suite.parse_args([]).min_seconds == 8.
    assert suite.parse_args(['--device', 'cuda']).min_seconds == 2.
    assert suite.parse_args(['--quick']).min_seconds == 0.
    assert suite.parse_args(['--tiny']).min_seconds == 0.
    assert suite.parse_args(['--quick', '--min-seconds', '3']).min_seconds == 3.
    md = suite.format_markdown(dict(device_name='cpu', threads=2, amp=None, rounds=5,
                                    per_round=1, warmup=2, min_seconds=8., tiny=False,
                                    ref=False, rows=[], train_rows=[], levels=[0.5]))
    assert 'more rounds (up to 50) until a row\'s timed calls took 8 s' in md.splitlines()[0]


def test_cuda_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import torch
    # a machine without CUDA (also on one that has it: the check must not depend on it)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert suite.main(['--device', 'cuda', '--tiny', '--out-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'error: --device cuda: CUDA is not available'


def test_training_rows(tmp_path):
    """--train (without --quick) adds a training step row per method (no peak memory on the
    CPU); for MSViT also the dynamic model with its gate at P(fine) 0.5, adaptive trimming on
    and off; --quick leaves the training rows out."""
    base = ['--tiny', '--methods', 'msvit', '--levels', '0.5', '--batches', '4', '--rounds', '1',
            '--warmup', '0', '--no-ref', '--train']
    assert suite.main(base + ['--out-dir', str(tmp_path / 'a')]) == 0
    data = json.loads((tmp_path / 'a' / 'suite.json').read_text())
    md = (tmp_path / 'a' / 'suite.md').read_text()
    (tr,) = data['train_rows']
    assert tr['method'] == 'msvit' and tr['batch'] == 4
    assert tr['host']['step_ms_median'] > 0 and tr['dynamic']['step_ms_median'] > 0
    assert tr['host']['peak_mem_mib'] is None
    assert tr['train_speedup'] == pytest.approx(
        tr['host']['step_ms_median'] / tr['dynamic']['step_ms_median'])
    on, off = tr['variants']
    assert (on['adaptive_trimming'], off['adaptive_trimming']) == (True, False)
    assert on['p_fine'] == off['p_fine'] == 0.5
    # Gumbel decisions at P(fine) 0.5 on 2x2 regions of 4 images: a mixed batch, unlike the
    # gate's initial P(fine) 0.99
    assert 0. < on['fine_share_realised'] < 1. and 0. < off['fine_share_realised'] < 1.
    assert tr['trimming_speedup'] == pytest.approx(off['step_ms_median'] / on['step_ms_median'])
    rows = _table_rows(md, ('msvit', 'msvit (P(fine) 0.5, trimming on)',
                            'msvit (P(fine) 0.5, trimming off)'))
    train = [c for c in rows if len(c) == 7]
    assert [c[0] for c in train] == ['msvit', 'msvit (P(fine) 0.5, trimming on)',
                                     'msvit (P(fine) 0.5, trimming off)']
    for c, d in zip(train, (tr, on, off)):
        step = (tr['dynamic'] if d is tr else d)['step_ms_median']
        assert c[1:5] == ['4', f'{tr["host"]["step_ms_median"]:.2f}', f'{step:.2f}',
                          f'{d["train_speedup"]:.3f}']
    assert 'weight 0' in md and f'(off / on) {tr["trimming_speedup"]:.3f}' in md
    assert suite.main(base + ['--quick', '--out-dir', str(tmp_path / 'b')]) == 0
    assert json.loads((tmp_path / 'b' / 'suite.json').read_text())['train_rows'] == []


def test_profile_shows_the_gpu_busy_time_when_there_is_one():
    """A CUDA profile's models carry the kernels' time; the Markdown prints it per model."""
    model = dict(model='host', shape=[8, 8], gflops_realised=0.5, self_cpu_ms_total=12.0,
                 device_busy_ms_total=1.25, dispatches_per_call=40.0,
                 ops=[dict(op='aten::addmm', calls=3, self_ms=6.0, percent=50.0)])
    out = dict(device_name='GPU', threads=None, amp=None, tiny=False, warmup=1, profiles=[
        dict(method='dge', level=0.5, batch=1, dvt_seq=None, exit_share_realised=None,
             ref_note=None, models=[model, dict(model, model='dynamic',
                                                  device_busy_ms_total=None)])])
    text = suite.format_profile(out)
    host, dyn = text.split('\n**')[1:]
    assert host.startswith('host**') and 'GPU busy 1.25 ms' in host
    assert dyn.startswith('dynamic**') and 'GPU busy' not in dyn


def test_allocator_is_recorded(result, monkeypatch):
    """The host allocator the timings ran with is in the JSON and the table's header (it moves
    CPU efficiencies); what the note says for each setting."""
    _, data, md = result
    assert data['allocator'] == suite.allocator_note()
    assert md.splitlines()[0].endswith(f', host allocator {data["allocator"]}')
    monkeypatch.setattr(suite.sys, 'platform', 'linux')
    assert suite.allocator_note({}) == 'glibc defaults'
    assert suite.allocator_note({'MALLOC_MMAP_THRESHOLD_': '4294967296', 'MALLOC_ARENA_MAX': '2',
                                 'OTHER': '1'}) == \
        'glibc MALLOC_MMAP_THRESHOLD_=4294967296, MALLOC_ARENA_MAX=2'
    assert suite.allocator_note({'LD_PRELOAD': '/usr/lib/libjemalloc.so.2',
                                 'MALLOC_ARENA_MAX': '2'}) == 'jemalloc (LD_PRELOAD)'
    monkeypatch.setattr(suite.sys, 'platform', 'darwin')
    assert suite.allocator_note({}) == 'system malloc'
