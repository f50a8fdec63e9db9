"""Shared fixtures: the repo root, running tools as subprocesses, generated data sets."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_default_scope_from_earlier_tests():
    """Each test starts with no mmengine default scope (a Runner or ``init_default_scope`` in an
    earlier test would otherwise decide where plain type names are looked up)."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()


@pytest.fixture(scope='session')
def repo_root():
    return REPO


def _run(args, timeout=600, env=None, cwd=None):
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='session')
def run_tool():
    """Run ``python <repo>/tools/<script> args...``; returns the CompletedProcess."""

    def run(script, *args, timeout=600, env=None, cwd=None):
        return _run([sys.executable, osp.join(REPO, 'tools', script), *map(str, args)],
                    timeout=timeout, env=env, cwd=cwd)

    return run


@pytest.fixture(scope='session')
def run_cmd():
    """Run any command with the repo on PYTHONPATH."""
    return _run


def _make(tmp_path_factory, layout, **kw):
    from mmdyn.datasets.toy import make_toy_dataset
    out = str(tmp_path_factory.mktemp(f'toy_{layout}'))
    make_toy_dataset(layout, out, **kw)
    return out


@pytest.fixture(scope='session')
def toy_ade20k(tmp_path_factory):
    return _make(tmp_path_factory, 'ade20k', num=8, num_val=2, size=(64, 64), seed=1)


@pytest.fixture(scope='session')
def toy_cityscapes(tmp_path_factory):
    return _make(tmp_path_factory, 'cityscapes', num=4, num_val=2, size=(64, 128), seed=1)


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory):
    return _make(tmp_path_factory, 'coco', num=6, num_val=2, size=(96, 128), seed=1)


@pytest.fixture(scope='session')
def toy_imagenet(tmp_path_factory):
    return _make(tmp_path_factory, 'imagenet', num=8, num_val=4, size=(32, 32), seed=1)
