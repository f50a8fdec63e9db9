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
    (['nope'], "learning_check: error: no learning check for 'nope'; choose one of dge, dit, "
     'dovit, dvt, msvit'),
    (['fake', '--seeds', '0'], 'learning_check: error: --seeds must be at least 1'),
    (['fake', '--scene', 'detail'], "learning_check: error: fake has no 'detail' scenes"),
    (['fake', '--shallow'], 'learning_check: error: fake has no fewer-blocks host'),
    (['msvit', '--shallow', '--scene', 'shapes'], 'learning_check: error: msvit runs the '
     'fewer-blocks host on the detail scenes only (--scene detail)'),
    # the real protocols' ranges, checked before any training
    (['dge', '--targets', '0.2', '1.5'],
     'learning_check: error: --targets 1.5: dge takes the budget gamma, in [0, 1]'),
    (['dit', '--targets', '0'], 'learning_check: error: --targets 0: dit takes the budget mu, '
     'in (0, 1]'),
    (['msvit', '--targets', '1'], 'learning_check: error: --targets 1: msvit takes the gate '
     'target g*, in (0, 1)'),
    (['dovit', '--targets', '-0.1'], 'learning_check: error: --targets -0.1: dovit takes the '
     'confidence threshold, in [0, 1]'),
    (['dvt', '--targets', '4.5'], 'learning_check: error: --targets 4.5: dvt takes the static grid '
     'side, an integer in [1, inf)'),
])
def test_errors(tool, monkeypatch, tmp_path, capsys, argv, message):
    real = learning.get_protocol

    def get(name):
        return fake_protocol([], scenes=('shapes', )) if name == 'fake' else real(name)

    def no_training(*args, **kwargs):
        raise AssertionError('the error comes before any data or training')

    monkeypatch.setattr(learning, 'get_protocol', get)
    for name in ('dge', 'dit', 'msvit', 'dovit', 'dvt'):
        monkeypatch.setattr(real(name), 'make_data', no_training)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        tool.main(argv + ['--work-dir', str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == message, err


def test_work_dir_that_is_a_file(tool, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(learning, 'get_protocol', lambda name: fake_protocol([]))
    (tmp_path / 'f').write_text('')
    with pytest.raises(SystemExit) as e:
        tool.main(['fake', '--work-dir', str(tmp_path / 'f')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == \
        f'learning_check: error: --work-dir {tmp_path / "f"} is a file, not a directory'
