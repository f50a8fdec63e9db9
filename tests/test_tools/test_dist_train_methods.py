"""Every method trains with two processes (``tools/train.py --launcher pytorch`` under torchrun,
gloo on the CPU).

One run per method, on its cheapest tiny CPU config (``configs/_tiny_/``, generated data,
2 iterations, validation at the end). The runs share one torchrun start: a small driver calls
``tools/train.py``'s ``main`` for each config in turn in the same two processes (the process
group is closed after each run and opened again by the next, as ``tools/train.py`` does; the
per-process start-up, importing every codebase, is most of a tiny run's time).
``tools/dist_train.sh`` itself is run by ``test_train_test_tools.py``. A small hook, written by
the test and loaded through ``custom_imports``, makes each rank dump what it computed: its
per-iteration losses (before any reduction), the per-image dynamic records of its training
batches, the images it validated with their realised FLOPs, how many results
``ComplexityMetric`` saw and what ``DynamicStatsHook`` gathered. The test then checks, against
the run's ``vis_data/scalars.json``:

* every logged training loss is the mean of the two ranks' losses (DDP averages the gradients of
  both, so that is the loss of the update; mmengine alone would log rank 0's);
* the ranks ran different dynamic graphs (per-image realised FLOPs differ between the ranks for
  the methods whose gates sample in training), which DDP survived (``find_unused_parameters``);
* validation covered every image of the data set exactly once across the two ranks, and the
  logged ``ComplexityMetric`` and ``DynamicStatsHook`` figures are the means over all of them.
"""
import glob
import json
import os
import os.path as osp
import shutil
import socket
import sys

import pytest

# runs several processes at once: one xdist worker takes every such module in turn
pytestmark = pytest.mark.xdist_group('multiprocess')

TINY = 'configs/_tiny_'
# method (and codebase): (config, data set fixture, whether its gates sample in training); every
# codebase each method targets: DGE mmseg/mmdet/mmpretrain, DiT mmdet/mmseg, DoViT mmseg,
# MSViT mmpretrain/mmseg, DVT mmpretrain
METHODS = {
    'dge': ('fpn_dge-pvt-tiny_toy-ade20k.py', 'toy_ade20k', True),
    'dge-det': ('maskrcnn_dge-pvt-tiny_toy-coco.py', 'toy_coco', True),
    'dge-cls': ('dge-deit-tiny_toy-imagenet.py', 'toy_imagenet', True),
    'dit': ('retinanet_dit-tiny_toy-coco.py', 'toy_coco', True),
    'dit-seg': ('fpn_dit-tiny_toy-ade20k.py', 'toy_ade20k', True),
    'dovit': ('setr_dovit-tiny_toy-ade20k.py', 'toy_ade20k', False),
    'msvit': ('msvit-tiny_toy-imagenet.py', 'toy_imagenet', True),
    'msvit-seg': ('segmenter_msvit-tiny_toy-ade20k.py', 'toy_ade20k', False),
    'dvt': ('dvt-tiny_toy-imagenet.py', 'toy_imagenet', False),
}
# a fresh MSViT gate keeps 99 % of the regions fine, so every image would run the same tokens;
# start it at even odds so that the images (and the ranks) run different token sets
EXTRA = {'msvit': ['model.backbone.gate_cfg.init_fine_prob=0.5'],
         'msvit-seg': ['model.backbone.gate_cfg.init_fine_prob=0.5']}
ITERS = 2

DUMP_HOOK = '''
"""Test hook: each rank writes what it computed (losses, dynamic records, images) to a JSON."""
import json
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

import mmdyn.engine.hooks.stats_hook as _stats_hook

GATHERED = []
_orig_gather = _stats_hook.all_gather_object


def _recording_gather(obj):
    out = _orig_gather(obj)
    GATHERED.append([[dict(s), dict(c)] for s, c in out])
    return out


_stats_hook.all_gather_object = _recording_gather


def _start_of_run():
    GATHERED.clear()  # one list per process: the runs of the methods follow each other


@HOOKS.register_module()
class RankDumpHook(Hook):
    priority = 'VERY_LOW'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        _start_of_run()
        self.rec = dict(train=[], val=[], metric_sizes=[], gathered=GATHERED)
        self._losses = None

    def before_run(self, runner):
        model = runner.model
        module = getattr(model, 'module', model)
        orig = module.parse_losses

        def parse_losses(losses):
            loss, log_vars = orig(losses)
            self._losses = {k: float(v) for k, v in log_vars.items()}
            return loss, log_vars

        module.parse_losses = parse_losses
        self.rec['wrapper'] = type(model).__name__
        self.rec['find_unused_parameters'] = bool(getattr(model, 'find_unused_parameters',
                                                          False))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        from mmdyn.models.utils.records import summarize_dynamic_records
        s = summarize_dynamic_records(runner.model)
        self.rec['train'].append(dict(
            step=runner.iter + 1, losses=self._losses,
            flops=None if s is None else s['flops'].tolist()))

    def before_val_epoch(self, runner):
        for m in runner.val_loop.evaluator.metrics:
            if type(m).__name__ == 'ComplexityMetric' and not hasattr(m, '_dumped'):
                orig = m.compute_metrics

                def compute(results, _orig=orig):
                    self.rec['metric_sizes'].append(len(results))
                    return _orig(results)

                m.compute_metrics = compute
                m._dumped = True

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for o in outputs:
            meta = o.metainfo
            self.rec['val'].append(dict(img_path=meta.get('img_path'),
                                        flops=meta.get('dynamic_flops')))

    def after_run(self, runner):
        with open(osp.join(self.out_dir, f'rank{get_rank()}.json'), 'w') as f:
            json.dump(self.rec, f)
'''


DRIVER = '''
"""Test driver: tools/train.py's main for each run of a JSON list, in turn, in this process.
Each run's process group meets on a store of its own (a new port, rank 0 serves it): a group
opened again on torchrun's agent store could read the previous group's stale addresses."""
import importlib.util
import json
import os
import sys

spec = importlib.util.spec_from_file_location('mmdyn_train_tool', sys.argv[1])
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
from mmengine.logging import MessageHub
from mmengine.visualization import Visualizer


def fresh_instances():
    """What a new process starts with: no visualizer or message hub of an earlier run (the
    codebases' configs all name their visualizer 'visualizer', and get_instance would hand the
    earlier run's, writing to its work dir)."""
    classes = [Visualizer, MessageHub]
    while classes:
        cls = classes.pop()
        cls._instance_dict.clear()
        classes.extend(cls.__subclasses__())


os.environ['TORCHELASTIC_USE_AGENT_STORE'] = 'False'
for run in json.load(open(sys.argv[2])):
    os.environ['MASTER_PORT'] = str(run['port'])
    fresh_instances()
    train.main(run['argv'])  # an error ends the process; torchrun then stops the other rank
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _val_images(root, kind):
    if kind == 'toy_ade20k':
        files = glob.glob(osp.join(root, 'images', 'validation', '*'))
    elif kind == 'toy_coco':
        files = glob.glob(osp.join(root, 'val2017', '*'))
    else:
        files = glob.glob(osp.join(root, 'val', '**', '*.*'), recursive=True)
    return sorted(osp.basename(f) for f in files)


def _scalars(wd):
    path = glob.glob(osp.join(wd, '*', 'vis_data', 'scalars.json'))
    assert len(path) == 1, path
    with open(path[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def _run_args(method, root, cfg_dir, wd, repo_root):
    name, data_fixture, _ = METHODS[method]
    cfg_path = osp.join(repo_root, TINY, name)
    assert osp.isfile(cfg_path), cfg_path
    # custom_imports are imported when the config file is read, so the test's hook module is
    # named in a child config rather than in --cfg-options
    child = cfg_dir / f'{method}.py'
    child.write_text(f'_base_ = {cfg_path!r}\n'
                     "custom_imports = dict(imports=['mmdyn', 'mmdyn_rank_dump'], "
                     'allow_failed_imports=False)\n')
    options = [f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val', 'test')]
    options += [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
                'log_processor.window_size=1',  # log each iteration's value, not a running mean
                'randomness.diff_rank_seed=True',  # each rank samples its own gate noise
                'default_hooks.rank_dump.type=RankDumpHook',
                f'default_hooks.rank_dump.out_dir={wd}'] + EXTRA.get(method, [])
    if data_fixture == 'toy_coco':  # the COCO metric reads the annotation file itself
        ann = osp.join(root, 'annotations', 'instances_val2017.json')
        options += [f'val_evaluator.0.ann_file={ann}', f'test_evaluator.0.ann_file={ann}']
    return [str(child), '--launcher', 'pytorch', '--work-dir', str(wd), '--cfg-options',
            *options]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo_root, run_cmd, request):
    """Every method's two-process run, all in one torchrun start; returns the work dirs and the
    combined log."""
    base = tmp_path_factory.mktemp('dist_methods')
    hook_dir = base / 'hook'
    hook_dir.mkdir()
    (hook_dir / 'mmdyn_rank_dump.py').write_text(DUMP_HOOK)
    (base / 'driver.py').write_text(DRIVER)
    wds, argvs = {}, []
    for method in sorted(METHODS):
        root = request.getfixturevalue(METHODS[method][1])
        wds[method] = base / method
        argvs.append(dict(argv=_run_args(method, root, base, wds[method], repo_root),
                          port=_free_port()))
    (base / 'runs.json').write_text(json.dumps(argvs))
    env = {'PYTHONPATH': os.pathsep.join([repo_root, str(hook_dir)])}

    def start():
        for wd in wds.values():
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir()
        return run_cmd([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                        f'--master_port={_free_port()}', str(base / 'driver.py'),
                        osp.join(repo_root, 'tools', 'train.py'), str(base / 'runs.json')],
                       env=env, timeout=900)

    r = start()
    log = r.stdout + r.stderr
    if r.returncode != 0 and 'terminate called without an active exception' in log:
        # A rare C++ abort inside a CPU (gloo) DDP process, seen once in ~10 runs of the tiny
        # Mask R-CNN, not reproduced since: run once more (the checks are then made on that run)
        r = start()
        log = r.stdout + r.stderr
    return wds, r.returncode, log


@pytest.mark.parametrize('method', sorted(METHODS))
def test_two_process_training(method, runs, request):
    _, data_fixture, gates_sample = METHODS[method]
    root = request.getfixturevalue(data_fixture)
    wds, returncode, log = runs
    wd = wds[method]
    assert all((wd / f'rank{i}.json').is_file() for i in (0, 1)), log[-5000:]
    assert returncode == 0, log[-5000:]
    run_log = glob.glob(osp.join(wd, '*', '*.log'))
    assert len(run_log) == 1, run_log
    text = open(run_log[0]).read()
    assert 'Distributed training: True' in text and 'GPU number: 2' in text

    ranks = [json.load(open(wd / f'rank{i}.json')) for i in (0, 1)]
    for rec in ranks:
        assert rec['wrapper'] == 'MMDynCPUDistributedDataParallel'
        assert rec['find_unused_parameters'] is True
        assert [t['step'] for t in rec['train']] == list(range(1, ITERS + 1))
    scalars = _scalars(wd)
    train = {s['step']: s for s in scalars if 'loss' in s}
    assert sorted(train) == list(range(1, ITERS + 1))

    # -- losses: what is logged is the mean of the two ranks' losses, for every loss term
    differ = False
    for step in range(1, ITERS + 1):
        l0 = ranks[0]['train'][step - 1]['losses']
        l1 = ranks[1]['train'][step - 1]['losses']
        assert set(l0) == set(l1)
        assert any(k.startswith('loss_') or '.loss' in k for k in l0), l0  # the terms too
        for k in l0:
            assert train[step][k] == pytest.approx((l0[k] + l1[k]) / 2, rel=1e-5, abs=1e-7), \
                (step, k, l0[k], l1[k], train[step][k])
        differ |= abs(l0['loss'] - l1['loss']) > 1e-6
    assert differ, 'both ranks had the same loss at every step: the check would prove nothing'

    # -- the two ranks ran different dynamic graphs in training
    flops = [[t['flops'] for t in rec['train']] for rec in ranks]
    assert all(f is not None for rank in flops for f in rank)
    if gates_sample:
        assert flops[0] != flops[1], flops
    # ... and the logged training statistics are the image-weighted means over both ranks
    for step in range(1, ITERS + 1):
        both = flops[0][step - 1] + flops[1][step - 1]
        assert train[step]['dyn_gflops'] == pytest.approx(sum(both) / len(both) / 1e9,
                                                          rel=1e-5), step

    # -- validation: every image once across the ranks; the logged means cover all of them
    val = ranks[0]['val'] + ranks[1]['val']
    names = sorted(osp.basename(v['img_path']) for v in val)
    expected = _val_images(root, data_fixture)
    assert names == expected and len(ranks[0]['val']) == len(ranks[1]['val']) > 0
    n = len(expected)
    assert ranks[0]['metric_sizes'] == [n]  # ComplexityMetric gathered both ranks' results
    gathered = ranks[0]['gathered'][-1]  # what DynamicStatsHook gathered at the end of val
    assert len(gathered) == 2 and sum(c['gflops'] for _, c in gathered) == n
    mean_gflops = sum(v['flops'] for v in val) / n / 1e9
    evals = [s for s in scalars if 'complexity/gflops' in s]
    assert len(evals) == 1
    assert evals[0]['complexity/gflops'] == pytest.approx(mean_gflops, rel=1e-6)
    assert evals[0]['dyn_gflops'] == pytest.approx(mean_gflops, rel=1e-6)


REDUCE_SCRIPT = '''
import importlib.util, json, os, sys
import torch
import torch.distributed as dist
# the module alone: importing the mmdyn package would import every codebase (slow)
spec = importlib.util.spec_from_file_location('mmdyn_dist', sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
reduce_log_vars = mod.reduce_log_vars
dist.init_process_group('gloo')
rank = dist.get_rank()
log_vars = {'loss': torch.tensor(1.0 + 2 * rank), 'loss_cls': torch.tensor([3.0 * (rank + 1)]),
            'acc': 10.0 * rank, 'vec': torch.tensor([1.0, 2.0])}
if rank == 1:
    log_vars['loss_only_here'] = torch.tensor(7.0)
out = reduce_log_vars(log_vars)
res = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
res['dtype'] = str(out['loss'].dtype)
res['requires_grad'] = bool(out['loss'].requires_grad)
with open(os.path.join(sys.argv[1], f'r{rank}.json'), 'w') as f:
    json.dump(res, f)
dist.destroy_process_group()
'''


def test_reduce_log_vars_two_processes(tmp_path, repo_root, run_cmd):
    """Keys every rank logged are averaged; a key one rank alone logged stays local; tensors
    that are not scalars are left alone."""
    script = tmp_path / 'reduce.py'
    script.write_text(REDUCE_SCRIPT)
    r = run_cmd([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                 f'--master_port={_free_port()}', str(script), str(tmp_path),
                 osp.join(repo_root, 'mmdyn', 'utils', 'dist.py')])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = [json.load(open(tmp_path / f'r{i}.json')) for i in (0, 1)]
    for o in out:
        assert o['loss'] == pytest.approx(2.0) and o['loss_cls'] == pytest.approx([4.5])
        assert o['acc'] == pytest.approx(5.0) and o['vec'] == [1.0, 2.0]
        assert o['dtype'] == 'torch.float32' and o['requires_grad'] is False
    assert 'loss_only_here' not in out[0] and out[1]['loss_only_here'] == pytest.approx(7.0)
