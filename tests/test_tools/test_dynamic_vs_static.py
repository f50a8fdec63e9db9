"""demo/dynamic_vs_static.py (the quickstart): its summary holds what it measured."""
import importlib.util
import json
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load():
    spec = importlib.util.spec_from_file_location('_mmdyn_dvs',
                                                  osp.join(REPO, 'demo', 'dynamic_vs_static.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_picture_and_plot(tmp_path, capsys):
    demo = _load()
    assert demo.main(['--work-dir', str(tmp_path), '--warmup', '3', '--iters', '2',
                      '--budgets', '0.3', '0.6']) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / 'summary.json').read_text())
    rows = summary['rows']
    assert summary['scene'] == 'detail'  # the default: small objects a smaller input blurs
    assert [r['model'] for r in rows][:3] == ['static PVT', 'DGE gamma=0.3', 'DGE gamma=0.6']
    assert rows[3]['model'].startswith('static PVT, ') and 'input' in rows[3]['model']
    from mmdyn.analysis.learning import dge
    from mmdyn.models.backbones.dge import DGEPVT
    host = DGEPVT(dge=False, **dge.HOST)
    # the static rows: the host's FLOPs at the full and at the reduced input size
    assert rows[0]['gflops'] == pytest.approx(host.static_flops((64, 64)) / 1e9)
    side = rows[3]['model'].split(', ')[1].split(' ')[0]
    h, w = (int(v) for v in side.split('x'))
    assert rows[3]['gflops'] == pytest.approx(host.static_flops((h, w)) / 1e9)
    # the reduced size is the one whose FLOPs are closest to the first DGE budget's
    best = min(((a, b) for a in dge.STATIC_SIDES for b in dge.STATIC_SIDES),
               key=lambda s: abs(host.static_flops(s) / 1e9 - rows[1]['gflops']))
    assert (h, w) == best
    for r in rows:
        assert 0 <= r['miou'] <= 1 and r['latency_ms'] > 0
        # the printed table holds the measured numbers
        assert f"{100 * r['miou']:.1f}" in out and f"{r['gflops']:.5f}" in out
    # dynamic rows cost at most the static host plus its gates (a gate on every region)
    for r in rows[1:3]:
        assert r['gflops'] <= rows[0]['gflops'] * 1.01
    for name in ('decisions.png', 'miou_vs_gflops.png'):
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert str(tmp_path / name) in out.replace('\n', '')


def test_bad_budget_is_one_line(capsys):
    demo = _load()
    with pytest.raises(SystemExit) as e:
        demo.main(['--budgets', '1.5'])
    assert e.value.code == 2
    assert '--budgets must lie in (0, 1]' in capsys.readouterr().err


def test_work_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    """(was: a FileExistsError traceback after the data was generated)"""
    demo = _load()
    f = tmp_path / 'wd'
    f.write_text('')
    with pytest.raises(SystemExit) as e:
        demo.main(['--work-dir', str(f)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count('\n') == 0
    assert err.endswith(f'error: --work-dir {f} is a file, not a directory')


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
