"""Shared fixtures: the repo root, running tools as subprocesses, generated data sets."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

if os.environ.get('PYTEST_XDIST_WORKER'):
    # several pytest workers share the CPU cores: one intra-op thread each (tiny models)
    torch.set_num_threads(1)


# Modules known to take the longest (seconds, 2 idle cores): with ``-n 2 --dist loadgroup`` they
# start first, so that no long test is left alone on one worker at the end of the run
# (longest-first scheduling); the ``multiprocess`` xdist group, one unit of work, goes first.
LONG_FIRST = ('test_bad_input.py', 'test_dist_train_methods.py', 'test_train_test_tools.py',
              'test_complexity_metric.py', 'test_model_index.py', 'test_benchmark_suite.py',
              '_learning.py', 'test_random_state_hook.py', 'test_dge_vtpack.py')


def pytest_collection_modifyitems(config, items):
    """Long-first order (stable; the same on every xdist worker, as xdist requires)."""

    def rank(item):
        group = item.get_closest_marker('xdist_group')
        if group is not None and group.args and group.args[0] == 'multiprocess':
            return 0
        name = item.nodeid.split('::')[0]
        return next((1 + i for i, key in enumerate(LONG_FIRST) if name.endswith(key)),
                    1 + len(LONG_FIRST))

    items.sort(key=rank)


def _load_script(relpath: str, name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def load_tool():
    """``fn(relpath) -> module``: a script of this repository (e.g.
    ``'tools/analysis_tools/learning_check.py'``) loaded as a module, to call its functions or
    its ``main(argv)`` in this process."""
    return lambda relpath: _load_script(relpath, '_mmdyn_' + osp.basename(relpath)[:-3])


@pytest.fixture(autouse=True, scope='session')
def _mim_index_read_once():
    """mmengine re-reads every metafile of a codebase for each whole ``mmseg::`` / ``mmdet::``
    config a config inherits; read each index once per session (speed only: same answers,
    the same ``ValueError`` for a name no metafile lists)."""
    import importlib.util
    import mmengine.config.utils as u
    orig = u._get_cfg_metainfo
    path = osp.join(REPO, 'tools', 'misc', 'complexity_cache.py')
    spec = importlib.util.spec_from_file_location('_mmdyn_complexity_cache', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.speed_up_config_loading()
    yield
    u._get_cfg_metainfo = orig


@pytest.fixture(autouse=True)
def _no_default_scope_from_earlier_tests():
    """Each test starts with no mmengine default scope (a Runner or ``init_default_scope`` in an
    earlier test would otherwise decide where plain type names are looked up)."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()


def fresh_instances():
    """Forget the visualizers and message hubs of earlier runs in this process, as a new process
    would: the codebases' configs all name their visualizer 'visualizer', and mmengine's
    ``get_instance`` would hand a later Runner the earlier one (writing to its work dir)."""
    from mmengine.logging import MessageHub
    from mmengine.visualization import Visualizer
    classes = [Visualizer, MessageHub]
    while classes:
        cls = classes.pop()
        cls._instance_dict.clear()
        classes.extend(cls.__subclasses__())


@pytest.fixture(scope='session')
def fresh_process_state():
    """:func:`fresh_instances`, for tests that run several Runners in this process."""
    return fresh_instances


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a test module (tiny maps: faster than contended parallelism);
    a module opts in with ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def _public_dvt_layout(model):
    """A DVTClassifier's weights with the public DVT code's key names: exits
    ``less_less_token`` / ``less_token`` / ``normal_token``, each a timm-style ViT (DeiT host:
    ``patch_embed.proj``) or a public-code T2T-ViT (T2T host: ``tokens_to_token``), blocks with a
    fused qkv, the reuse modules ``blocks.N.feature_resuse_mlp`` (LN + Mlp) and
    ``relation_reuse_conv`` (1x1 convs). The test-side inverse of the library's converter."""
    import torch
    names = ('less_less_token', 'less_token', 'normal_token')
    out = {}
    for k, e in enumerate(model.exits):
        n = names[k]
        bb = e.backbone
        if hasattr(bb, 'token1'):  # T2T host
            for i, tok in ((1, bb.token1), (2, bb.token2)):
                for key, v in tok.state_dict().items():
                    out[f'{n}.tokens_to_token.attention{i}.{key}'] = v
            out[f'{n}.tokens_to_token.project.weight'] = bb.project.weight
            out[f'{n}.tokens_to_token.project.bias'] = bb.project.bias
        else:
            out[f'{n}.patch_embed.proj.weight'] = bb.patch_embed.projection.weight
            out[f'{n}.patch_embed.proj.bias'] = bb.patch_embed.projection.bias
        out[f'{n}.cls_token'] = bb.cls_token
        out[f'{n}.pos_embed'] = bb.pos_embed
        for i, blk in enumerate(bb.blocks):
            p = f'{n}.blocks.{i}.'
            out[p + 'attn.qkv.weight'] = torch.cat([blk.attn.q.weight, blk.attn.kv.weight])
            if blk.attn.q.bias is not None:
                out[p + 'attn.qkv.bias'] = torch.cat([blk.attn.q.bias, blk.attn.kv.bias])
            out[p + 'attn.proj.weight'] = blk.attn.proj.weight
            out[p + 'attn.proj.bias'] = blk.attn.proj.bias
            for nm in ('norm1', 'norm2'):
                out[p + f'{nm}.weight'] = getattr(blk, nm).weight
                out[p + f'{nm}.bias'] = getattr(blk, nm).bias
            for fc in ('fc1', 'fc2'):
                out[p + f'mlp.{fc}.weight'] = getattr(blk.ffn, fc).weight
                out[p + f'mlp.{fc}.bias'] = getattr(blk.ffn, fc).bias
            if e.feature_reuse:
                fm = e.feature_modules[i]
                out[p + 'feature_resuse_mlp.0.weight'] = fm.norm.weight
                out[p + 'feature_resuse_mlp.0.bias'] = fm.norm.bias
                for fc in ('fc1', 'fc2'):
                    out[p + f'feature_resuse_mlp.1.{fc}.weight'] = getattr(fm, fc).weight
                    out[p + f'feature_resuse_mlp.1.{fc}.bias'] = getattr(fm, fc).bias
        out[f'{n}.norm.weight'] = bb.norm.weight
        out[f'{n}.norm.bias'] = bb.norm.bias
        out[f'{n}.head.weight'] = e.head.fc.weight
        out[f'{n}.head.bias'] = e.head.fc.bias
        if e.relation_reuse:
            r = e.relation_module
            out[f'{n}.relation_reuse_conv.0.weight'] = r.fc1.weight[:, :, None, None]
            out[f'{n}.relation_reuse_conv.0.bias'] = r.fc1.bias
            out[f'{n}.relation_reuse_conv.2.weight'] = r.fc2.weight[:, :, None, None]
            out[f'{n}.relation_reuse_conv.2.bias'] = r.fc2.bias
    return {k: v.detach().clone() for k, v in out.items()}


@pytest.fixture(scope='session')
def public_dvt_layout():
    """``fn(dvt_classifier) -> state dict`` in the public DVT code's layout (both hosts)."""
    return _public_dvt_layout


@pytest.fixture(scope='session')
def train_tiny(tmp_path_factory):
    """``fn(name, data_root, iters=2) -> (config, checkpoint)``: ``tools/train.py``, in this
    process, on ``configs/_tiny_/<name>`` over a generated data set (a COCO config also gets
    the set's annotation file for its evaluators)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('_mmdyn_train_tool',
                                                  osp.join(REPO, 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def train(name, data_root, iters=2):
        wd = str(tmp_path_factory.mktemp(name[:-3]))
        cfg = osp.join(REPO, 'configs', '_tiny_', name)
        opts = [f'{s}_dataloader.dataset.data_root={data_root}' for s in ('train', 'val', 'test')]
        if 'coco' in name:
            ann = osp.join(data_root, 'annotations', 'instances_val2017.json')
            opts += [f'{s}_evaluator.0.ann_file={ann}' for s in ('val', 'test')]
        opts += [f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000']
        tool.main([cfg, '--work-dir', wd, '--cfg-options', *opts])
        ckpt = osp.join(wd, f'iter_{iters}.pth')
        assert osp.isfile(ckpt)
        return cfg, ckpt

    return train
