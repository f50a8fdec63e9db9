"""tools/analysis_tools/learning_check.py: which scenes it runs, how it counts the seeds each
claim holds for, what it writes, and its errors (a stand-in protocol: the training itself is
tested by the ``test_*_learning.py`` modules)."""
import json
import types

import pytest

import mmdyn.analysis.learning as learning


def fake_protocol(calls, scenes=('shapes', 'detail')):
    def make_data(scene='shapes'):
        calls.append(('data', scene))
        return scene

    def run(seed, static, data, **kw):
        calls.append(('run', seed, static, data, kw))
        # seed s: metric 0.5 + 0.1 s against a static host at 0.6 (only seed 2 beats it)
        return dict(points=[dict(seed=seed, target=0.5, miou=0.5 + 0.1 * seed, gflops=1e-3,
                                 static_at_gflops=1e-3, static_miou=0.6)])

    return types.SimpleNamespace(
        SCENES=scenes, METRIC='miou', make_data=make_data, run=run,
        REPORT=('seed', 'target', 'miou', 'gflops', 'static_at_gflops', 'static_miou'),
        CLAIMS={'beats the static host': (('static_miou', ),
                                          lambda p: p['miou'] > p['static_miou'])})


@pytest.fixture
def tool(load_tool):
    return load_tool('tools/analysis_tools/learning_check.py')


@pytest.mark.parametrize('scenes, arg, expected', [
    (('shapes', 'detail'), [], 'detail'),  # the default where a protocol has detail scenes
    (('shapes', 'detail'), ['--scene', 'shapes'], 'shapes'),
    (('shapes', ), [], 'shapes'),
])
def test_scene_choice_claims_and_outputs(tool, monkeypatch, tmp_path, scenes, arg, expected):
    calls = []
    monkeypatch.setattr(learning, 'get_protocol', lambda name: fake_protocol(calls, scenes))
    tool.main(['fake', '--seeds', '3', '--work-dir', str(tmp_path)] + arg)
    assert calls[0] == ('data', expected)
    runs = [c for c in calls if c[0] == 'run']
    assert [c[1] for c in runs] == [0, 1, 2] and all(c[2] is True for c in runs)
    assert all(c[4] == ({} if expected == 'shapes' else dict(scene='detail')) for c in runs)
    stem = tmp_path / ('learning_fake' + ('' if expected == 'shapes' else '_detail'))
    out = json.loads(stem.with_suffix('.json').read_text())
    assert out['scene'] == expected and len(out['points']) == 3
    assert out['claims'] == {'beats the static host': '1 of 3'}
    assert stem.with_suffix('.png').stat().st_size > 0


def test_targets_and_no_static_reach_the_protocol(tool, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(learning, 'get_protocol', lambda name: fake_protocol(calls))
    tool.main(['fake', '--seeds', '1', '--no-static', '--targets', '0.2', '0.3',
               '--work-dir', str(tmp_path)])
    (run, ) = [c for c in calls if c[0] == 'run']
    assert run[2] is False and run[4] == dict(targets=[0.2, 0.3], scene='detail')


@pytest.mark.parametrize('argv, message', [
    (['nope'], "learning_check: no learning check for 'nope'"),
    (['fake', '--seeds', '0'], 'learning_check: --seeds must be at least 1'),
    (['fake', '--scene', 'detail'], "learning_check: fake has no 'detail' scenes"),
    (['fake', '--shallow'], 'learning_check: fake has no fewer-blocks host'),
])
def test_errors(tool, monkeypatch, tmp_path, argv, message):
    real = learning.get_protocol

    def get(name):
        return real(name) if name == 'nope' else fake_protocol([], scenes=('shapes', ))

    monkeypatch.setattr(learning, 'get_protocol', get)
    with pytest.raises(SystemExit) as e:
        tool.main(argv + ['--work-dir', str(tmp_path)])
    assert str(e.value).startswith(message), e.value
