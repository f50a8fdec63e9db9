"""What the README's first command installs, and that CI runs exactly the README's commands."""
import importlib.metadata as md
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _readme_commands():
    text = open(osp.join(REPO, 'README.md')).read()
    block = re.search(r'## Install and test\s+```bash\n(.*?)```', text, re.S)
    assert block, 'README has no "Install and test" bash block'
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_ci_runs_exactly_the_readme_test_command():
    quickstart, tests = _readme_commands()
    assert quickstart == 'bash tools/quickstart.sh' and tests == 'bash tools/run_tests.sh'
    ci = [ln.strip() for ln in open(osp.join(REPO, '.ci', 'run')).read().splitlines()
          if ln.strip() and not ln.startswith('#') and not ln.startswith(('set ', 'cd '))]
    assert ci == [tests]
    # both commands install what is missing first, the test command then runs the suite
    for script in ('quickstart.sh', 'run_tests.sh'):
        body = [ln.strip() for ln in open(osp.join(REPO, 'tools', script)).read().splitlines()
                if ln.strip() and not ln.startswith('#')]
        assert any(ln.startswith('bash tools/install.sh') for ln in body), script
    run = open(osp.join(REPO, 'tools', 'run_tests.sh')).read()
    assert '-m pytest' in run and '-n "${MMDYN_TEST_WORKERS:-2}" --dist loadgroup' in run


@pytest.mark.parametrize('dist,version', [
    ('torch', '2.13.0'), ('torchvision', '0.28.0'), ('mmengine', '0.10.7'), ('mmcv', '2.1.0'),
    ('mmdet', '3.3.0'), ('mmsegmentation', '1.2.2'), ('mmpretrain', '1.2.0')])
def test_pinned_versions(dist, version):
    assert md.version(dist).split('+')[0] == version


def test_numpy_below_2_and_setuptools_with_pkg_resources():
    import numpy
    assert int(numpy.__version__.split('.')[0]) < 2
    assert int(md.version('setuptools').split('.')[0]) < 82
    import pkg_resources  # noqa: F401  (mmengine's `mmdet::` bases and mmcv's build need it)


def test_compiled_ops_and_codebases_import():
    import torch
    from mmcv.ops import nms, RoIAlign  # compiled ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
    from torchvision.ops import nms as tv_nms
    assert tv_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    roi = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 8, 8), torch.tensor([[0., 0., 0., 4., 4.]]))
    assert torch.allclose(roi, torch.ones(1, 1, 2, 2))
    import ftfy  # noqa: F401
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401
    import regex  # noqa: F401


def test_mmdyn_is_installed_editable_from_this_checkout():
    import mmdyn
    assert osp.dirname(osp.abspath(mmdyn.__file__)) == osp.join(REPO, 'mmdyn')
    assert md.version('mmdyn') == mmdyn.__version__


def test_setup_declares_core_and_codebase_extras(tmp_path):
    """``pip install -e .[all]`` installs the three codebases and the test requirements; the
    core (mmengine, mmcv) is a plain dependency; the pins are the ones install.sh uses."""
    import subprocess
    import sys
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '-e', str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True)
    text = (tmp_path / 'mmdyn.egg-info' / 'requires.txt').read_text()
    sections, name = {}, ''
    for line in text.splitlines():
        if line.startswith('['):
            name = line.strip('[]')
        elif line.strip():
            sections.setdefault(name, set()).add(line.strip())
    pins = {ln.split('==')[0]: ln.strip() for ln in open(osp.join(REPO, 'requirements',
                                                                  'constraints.txt'))
            if '==' in ln and not ln.startswith('#')}
    assert {pins['mmengine'], pins['mmcv']} <= sections['']
    assert sections['det'] == {pins['mmdet']} and sections['seg'] == {pins['mmsegmentation']}
    assert sections['cls'] == {pins['mmpretrain']}
    assert sections['det'] | sections['seg'] | sections['cls'] | sections['tests'] \
        <= sections['all']
    assert 'pytest' in sections['tests']


def test_install_fast_path_sees_what_is_missing(monkeypatch, load_tool):
    """install.sh skips pip only when tools/misc/check_install.py finds everything: this
    machine passed the install, so nothing is missing; a package that is not installed, a
    version outside the wanted range, a constraint that excludes the installed version and an
    editable install from another checkout are each reported."""
    ci = load_tool('tools/misc/check_install.py')
    assert ci.missing_requirements() == [] and ci.mmdyn_editable_here() is None
    assert ci.compiled_ops_load() is None and ci.main() == 0
    monkeypatch.setattr(ci, 'NAMED', ('no-such-package-mmdyn', 'numpy>=99'))
    assert ci.missing_requirements() == [
        'no-such-package-mmdyn: not installed',
        f'numpy {md.version("numpy")}: wanted <2,>=99']  # with the constraint numpy<2
    monkeypatch.setattr(ci, 'NAMED', ())
    real = ci.read_requirements
    monkeypatch.setattr(ci, 'read_requirements', lambda name: (
        ['pytest==0.0.1'] if name == 'constraints.txt' else real(name)))
    assert ci.missing_requirements() == [f'pytest {md.version("pytest")}: wanted ==0.0.1']
    monkeypatch.setattr(ci, 'read_requirements', real)
    monkeypatch.setattr(ci, 'REPO', '/elsewhere')
    assert ci.mmdyn_editable_here() == f'mmdyn: installed from {REPO}, not from /elsewhere'
    assert ci.main() == 1
