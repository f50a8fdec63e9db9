"""tools/train.py, tools/test.py, dist_train.sh, resume and the one-line errors."""
import glob
import importlib.util
import os.path as osp
import types

import pytest
import torch

# the tests that run several processes at once (and those sharing their trained checkpoint):
# one xdist worker takes every such test in turn; the others are spread over the workers
multiprocess = pytest.mark.xdist_group('multiprocess')

QUICKSTART = 'configs/_quickstart_/fpn_dge-pvt-tiny_1xb8-300iter_toy-ade20k-128x128.py'


def tiny_config(tmp_path, repo_root, data_root, name='tiny.py', extra=''):
    """A config that inherits the quickstart config and shrinks it for a CPU test."""
    text = f'''
_base_ = [{osp.join(repo_root, QUICKSTART)!r}]
data_root = {data_root!r}
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=4, max_keep_ckpts=1))
{extra}
'''
    path = tmp_path / name
    path.write_text(text)
    return str(path)


EPOCH_EXTRA = '''
# mmseg's ADE20K base samples infinitely (iteration-based); epochs need a finite sampler
train_dataloader['sampler'] = dict(_delete_=True, type='DefaultSampler', shuffle=True)
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=2, val_interval=10)
# an explicit end: mmengine would otherwise stop the scheduler at the first run's max_epochs
param_scheduler = [dict(type='ExponentialLR', by_epoch=True, gamma=0.5, begin=0, end=100)]
default_hooks = dict(logger=dict(interval=1, log_metric_by_epoch=True),
                     checkpoint=dict(by_epoch=True, interval=1, max_keep_ckpts=3))
log_processor = dict(by_epoch=True)
'''


@pytest.fixture(scope='module')
def trained(tmp_path_factory, repo_root, toy_ade20k, run_tool):
    """One ``python tools/train.py`` run of the tiny config (4 iterations, validated at the
    end), shared by the tests that read its log or its checkpoint iter_4.pth."""
    tmp = tmp_path_factory.mktemp('trained')
    cfg = tiny_config(tmp, repo_root, toy_ade20k)
    wd = tmp / 'wd'
    r = run_tool('train.py', cfg, '--work-dir', wd)
    assert r.returncode == 0, r.stderr[-3000:]
    return cfg, wd, r


@multiprocess
def test_train_then_test(tmp_path, trained, run_tool, load_tool, toy_ade20k):
    cfg, wd, r = trained
    ckpt = wd / 'iter_4.pth'
    assert ckpt.is_file()
    assert 'mIoU' in r.stdout + r.stderr  # validated with the real metric
    assert 'loss_budget' in r.stdout + r.stderr  # the dynamic backbone's budget loss trains
    out, vis, dyn = tmp_path / 'preds.pkl', tmp_path / 'vis', tmp_path / 'dyn'
    r = run_tool('test.py', cfg, ckpt, '--work-dir', wd, '--out', out, '--show-dir', vis,
                 '--show-dynamic', dyn)
    assert r.returncode == 0, r.stderr[-3000:]
    # every test image drawn, into that directory (the hook's own interval is 50)
    assert len(glob.glob(str(vis / '**' / '*.png'), recursive=True)) == 2
    # every test image's decisions drawn, pixel for pixel as visualize_dynamic.py draws them
    import mmcv
    val_images = sorted(glob.glob(osp.join(toy_ade20k, 'images', 'validation', '*')))
    drawn = sorted(glob.glob(str(dyn / '*.png')))
    assert [osp.splitext(osp.basename(p))[0] for p in drawn] == \
        [osp.splitext(osp.basename(p))[0] for p in val_images]
    ref = load_tool('tools/analysis_tools/visualize_dynamic.py').main(
        [cfg, str(ckpt), *val_images, '--out', str(tmp_path / 'ref'), '--device', 'cpu'])
    for a, b in zip(drawn, sorted(ref)):
        assert (mmcv.imread(a) == mmcv.imread(b)).all(), a
    assert 'mIoU' in r.stdout + r.stderr
    import re
    gflops = re.search(r'complexity/gflops: ([0-9.]+)', r.stdout + r.stderr)
    static = re.search(r'complexity/static_gflops: ([0-9.]+)', r.stdout + r.stderr)
    assert gflops and static and 0 < float(gflops.group(1)) <= float(static.group(1))
    import pickle
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and 'pred_sem_seg' in preds[0]
    # the predictions, not the per-class logits (150 x H x W floats an image) nor the labels
    assert 'seg_logits' not in preds[0] and 'gt_sem_seg' not in preds[0]


@multiprocess
def test_tta_tests_every_view(tmp_path, trained, tool_log):
    """``--tta``: the config's SegTTAModel over its tta_pipeline (6 scales x 2 flips of the
    64 x 64 test images), with the checkpoint's weights in the wrapped model; an image's
    records are the sums over its 12 views: its static FLOPs equal the backbone's static
    FLOPs summed over the view sizes (32, 48, ..., 112 square, twice)."""
    import re

    from mmdyn.utils.cli import build_model, load_config
    cfg, wd, _ = trained
    log = tool_log('test.py', tmp_path / 'tta', cfg, wd / 'iter_4.pth', '--tta')
    assert 'unexpected key' not in log and 'missing keys' not in log, log[-2000:]
    assert 'mIoU' in log
    static = float(re.findall(r'complexity/static_gflops: ([0-9.]+)', log)[-1])
    realised = float(re.findall(r'complexity/gflops: ([0-9.]+)', log)[-1])
    bb = build_model(load_config(cfg)).backbone
    views = 2 * sum(float(bb.static_flops((s, s))) for s in (32, 48, 64, 80, 96, 112)) / 1e9
    assert static == pytest.approx(views, abs=1e-4)
    assert 0 < realised <= static + 1e-4


@multiprocess
@pytest.mark.parametrize('container', ['model', 'bare'])
def test_weights_under_any_key_are_the_ones_tested(tmp_path, trained, tool_log, container):
    """A checkpoint keeping its weights under ``model`` (DeiT / timm) or as a bare state dict
    is tested with those weights: the same predictions as the mmengine checkpoint (was, for
    ``model``: mmengine's loader found no ``state_dict``, loaded nothing and the test ran on
    random weights, with only an "unexpected key" warning)."""
    import pickle
    cfg, wd, _ = trained
    ckpt = torch.load(wd / 'iter_4.pth', map_location='cpu')
    path = tmp_path / f'{container}.pth'
    torch.save({'model': ckpt['state_dict'], 'epoch': 4} if container == 'model'
               else ckpt['state_dict'], path)
    preds = {}
    for name, c in (('ref', wd / 'iter_4.pth'), (container, path)):
        log = tool_log('test.py', tmp_path / name, cfg, c, '--out', tmp_path / f'{name}.pkl')
        assert 'unexpected key' not in log and 'missing keys' not in log, log[-2000:]
        with open(tmp_path / f'{name}.pkl', 'rb') as f:
            preds[name] = pickle.load(f)
    for a, b in zip(preds['ref'], preds[container]):
        assert torch.equal(a['pred_sem_seg']['data'], b['pred_sem_seg']['data'])
    # the rewrapped weights stay in the run's work dir (the saved config names them)
    assert (tmp_path / container / f'{container}_mmengine.pth').is_file()



def test_no_validate_and_loader_flags(tmp_path, repo_root, toy_ade20k, tool_log):
    """mmpretrain's train.py flags: ``--no-validate`` trains without the val loop (no mIoU in
    the log, the checkpoint written); ``--no-persistent-workers`` lets a config with
    persistent workers run with ``num_workers=0`` (else a one-line error, see
    test_error_bad_tool_options)."""
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k)
    wd = tmp_path / 'novalid'
    log = tool_log('train.py', wd, cfg, '--no-validate', '--no-persistent-workers',
                   '--no-pin-memory', '--cfg-options', 'train_dataloader.persistent_workers=True',
                   'train_dataloader.num_workers=0')
    assert 'Iter(train) [4/4]' in log and 'mIoU:' not in log and 'Iter(val)' not in log
    assert (wd / 'iter_4.pth').is_file()

def test_resume_continues_epoch_iteration_optimizer_and_scheduler(tmp_path, repo_root,
                                                                   toy_ade20k, tool_log):
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k, extra=EPOCH_EXTRA)
    wd = tmp_path / 'resume'
    tool_log('train.py', wd, cfg)
    ep2 = torch.load(wd / 'epoch_2.pth', map_location='cpu')  # weights_only=True (the default)
    iters_per_epoch = ep2['meta']['iter'] // 2
    assert ep2['meta']['epoch'] == 2 and iters_per_epoch == 2
    log = tool_log('train.py', wd, cfg, '--resume', '--cfg-options', 'train_cfg.max_epochs=3')
    assert 'resumed epoch: 2' in log.lower().replace(', iter:', ' iter')
    ep3 = torch.load(wd / 'epoch_3.pth', map_location='cpu')
    assert ep3['meta']['epoch'] == 3 and ep3['meta']['iter'] == 3 * iters_per_epoch
    # the optimizer state continued: AdamW counted every step of the three epochs
    steps = {int(s['step']) for s in ep3['optimizer']['state'].values()}
    assert steps == {3 * iters_per_epoch}
    # the scheduler continued: one halving per epoch, three epochs in all
    lr0 = ep2['optimizer']['param_groups'][0]['initial_lr']
    assert ep2['optimizer']['param_groups'][0]['lr'] == pytest.approx(lr0 * 0.5**2)
    assert ep3['optimizer']['param_groups'][0]['lr'] == pytest.approx(lr0 * 0.5**3)
    assert ep3['param_schedulers'][0]['last_step'] == 3


@multiprocess
def test_weights_only_load_needs_the_allow_list(run_cmd, trained):
    ckpt = str(trained[1] / 'iter_4.pth')
    import sys
    bare = run_cmd([sys.executable, '-c', f'import torch; torch.load({ckpt!r})'])
    assert bare.returncode != 0 and 'weights_only' in bare.stderr.replace(' ', '_').lower() \
        or 'Unsupported global' in bare.stderr
    import mmdyn  # noqa: F401  (this process: the allow-list is on)
    ok = torch.load(ckpt)  # weights_only=True, the default
    assert 'message_hub' in ok and 'optimizer' in ok


@multiprocess
def test_dist_train_two_processes_on_cpu(tmp_path, repo_root, toy_ade20k, run_cmd):
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k)
    wd = tmp_path / 'dist'
    r = run_cmd(['bash', osp.join(repo_root, 'tools', 'dist_train.sh'), cfg, '2',
                 '--work-dir', str(wd)], env={'PORT': '29533'})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    log = r.stdout + r.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert 'MMDynCPUDistributedDataParallel' in log
    assert (wd / 'iter_4.pth').is_file()


# --------------------------------------------------------------------- one-line errors
@pytest.fixture(scope='module')
def tool_mains(repo_root):
    """``main`` of tools/train.py and tools/test.py, to run in this process (no interpreter
    start, which imports every codebase, per run); ``trained``, ``test_train_then_test`` and the
    two-process tests run the scripts as programs."""
    mains = {}
    for script in ('train.py', 'test.py'):
        spec = importlib.util.spec_from_file_location(
            '_train_test_tools_' + script[:-3], osp.join(repo_root, 'tools', script))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mains[script] = mod.main
    return mains


@pytest.fixture(scope='module')
def tool_main(tool_mains):
    """A failing in-process run: its exit status and stderr, as a CompletedProcess would give
    them."""

    def run(capsys, script, *args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            tool_mains[script]([str(a) for a in args])
        return types.SimpleNamespace(returncode=e.value.code, stderr=capsys.readouterr().err)

    return run


@pytest.fixture(scope='module')
def tool_log(tool_mains, fresh_process_state):
    """A successful in-process run with ``--work-dir WD``: the text of the log it wrote there."""

    def run(script, wd, *args):
        before = set(glob.glob(osp.join(wd, '*', '*.log')))
        fresh_process_state()  # what a new process starts with
        tool_mains[script]([str(a) for a in args] + ['--work-dir', str(wd)])
        new = sorted(set(glob.glob(osp.join(wd, '*', '*.log'))) - before)
        assert len(new) == 1, new
        with open(new[0]) as f:
            return f.read()

    return run


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert 'Traceback' not in r.stderr
    assert any(all(n in ln for n in needles) for ln in lines), r.stderr


def test_error_missing_data_root(tmp_path, repo_root, tool_main, capsys):
    cfg = tiny_config(tmp_path, repo_root, str(tmp_path / 'nope'))
    _one_line_error(tool_main(capsys, 'train.py', cfg), 'data root', 'does not exist')


def test_error_unknown_type(tmp_path, repo_root, toy_ade20k, tool_main, capsys):
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k,
                      extra="model = dict(backbone=dict(_delete_=True, type='mmdyn.NoSuchNet'))")
    _one_line_error(tool_main(capsys, 'train.py', cfg, '--work-dir', tmp_path / 'w'),
                    'unknown type', 'NoSuchNet')


def test_error_unreadable_checkpoint(tmp_path, repo_root, toy_ade20k, tool_main, capsys):
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    _one_line_error(tool_main(capsys, 'test.py', cfg, bad), f'not a readable checkpoint: {bad} '
                    '(not a torch checkpoint: unrecognised bytes)')
    _one_line_error(tool_main(capsys, 'test.py', cfg, tmp_path / 'missing.pth'), 'checkpoint',
                    'does not exist')


def test_error_bad_tool_options(tmp_path, repo_root, toy_ade20k, tool_main, capsys):
    """Options the config cannot take: one line and exit status 2, like every input error."""
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k)
    ckpt = tmp_path / 'w.pth'
    torch.save({'state_dict': {}}, str(ckpt))
    _one_line_error(tool_main(capsys, 'test.py', cfg, ckpt, '--out', tmp_path / 'p.json',
                              '--allow-key-mismatch'),
                    'test.py: error: --out must be a .pkl or .pickle file')
    _one_line_error(tool_main(capsys, 'test.py', cfg, ckpt, '--show-dir', tmp_path / 'v',
                              '--allow-key-mismatch', '--cfg-options',
                              'default_hooks.visualization=None'),
                    'test.py: error: --show-dir needs a "visualization" entry')
    (tmp_path / 'dir.pkl').mkdir()
    _one_line_error(tool_main(capsys, 'test.py', cfg, ckpt, '--out', tmp_path / 'dir.pkl'),
                    'test.py: error: --out', 'is a directory, not a file')
    from mmdyn.utils.cli import build_model, load_config
    weights = tmp_path / 'weights.pth'  # the model's own weights, nothing to resume from
    torch.save({'state_dict': build_model(load_config(cfg)).state_dict()}, weights)
    _one_line_error(tool_main(capsys, 'train.py', cfg, '--resume', weights, '--work-dir',
                              tmp_path / 'w'),
                    'holds no training state to resume', f'load_from={weights}')
    _one_line_error(tool_main(capsys, 'train.py', cfg, '--work-dir', tmp_path / 'w',
                              '--cfg-options', 'train_dataloader.num_workers=0',
                              'train_dataloader.persistent_workers=True'),
                    'persistent_workers=True needs num_workers > 0')
    static = tiny_config(tmp_path, repo_root, toy_ade20k, name='static.py', extra=(
        "model = dict(backbone=dict(_delete_=True, type='mmdyn.PVT', arch=dict(embed_dims=[16, "
        "32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 4], mlp_ratios=[4, 4, 4, 4], "
        "sr_ratios=[8, 4, 2, 1])))\ncustom_hooks = []\n"))
    _one_line_error(tool_main(capsys, 'test.py', static, ckpt, '--show-dynamic', tmp_path / 'd',
                              '--allow-key-mismatch'),
                    'test.py: error: --show-dynamic: the model has no dynamic module')
    assert not (tmp_path / 'd').exists()
    _one_line_error(tool_main(capsys, 'train.py', cfg, '--auto-scale-lr', '--cfg-options',
                              'auto_scale_lr=None', '--work-dir', tmp_path / 'w'),
                    'train.py: error: --auto-scale-lr needs auto_scale_lr.base_batch_size')


@pytest.mark.parametrize('launcher, var', [('pytorch', 'RANK'), ('slurm', 'SLURM_PROCID'),
                                           ('mpi', 'OMPI_COMM_WORLD_LOCAL_RANK')])
def test_error_launcher_without_its_starter(tmp_path, repo_root, toy_ade20k, tool_main, capsys,
                                            monkeypatch, launcher, var):
    """``--launcher`` outside torchrun / srun / mpirun: one line naming the missing
    variables (was: a KeyError traceback from the process-group setup)."""
    from mmdyn.utils.dist import LAUNCHER_ENV
    for k in LAUNCHER_ENV[launcher]:
        monkeypatch.delenv(k, raising=False)
    cfg = tiny_config(tmp_path, repo_root, toy_ade20k)
    for script, args in (('train.py', ()), ('test.py', (tmp_path / 'none.pth', ))):
        _one_line_error(tool_main(capsys, script, cfg, *args, '--launcher', launcher,
                                  '--work-dir', tmp_path / 'w'),
                        f'--launcher {launcher}: {var}', 'not set')


def test_error_missing_config(repo_root, tool_main, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    _one_line_error(tool_main(capsys, 'train.py', 'configs/nope.py'), 'config file',
                    'does not exist')


def test_error_codebase_not_installed(tmp_path, monkeypatch):
    from mmdyn.utils import cli
    cfg = tmp_path / 'det.py'
    cfg.write_text("_base_ = ['mmdet::_base_/default_runtime.py']\n")
    real = cli._module_installed
    monkeypatch.setattr(cli, '_module_installed', lambda n: n != 'mmdet' and real(n))
    with pytest.raises(cli.ToolError, match=r'needs mmdet \(mmdet\), which is not installed'):
        cli.load_config(str(cfg))
    err = ModuleNotFoundError("No module named 'mmpretrain'", name='mmpretrain')
    assert 'needs mmpretrain (mmpretrain)' in cli.one_line(err)
    assert cli.one_line(RuntimeError('a real bug')) is None


@multiprocess
def test_dist_test_two_processes_on_cpu(tmp_path, repo_root, trained, run_cmd):
    cfg, _, t = trained
    r = run_cmd(['bash', osp.join(repo_root, 'tools', 'dist_test.sh'), cfg,
                 str(trained[1] / 'iter_4.pth'), '2', '--work-dir', str(tmp_path / 'wd')],
                env={'PORT': '29534'})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert 'GPU number: 2' in r.stdout + r.stderr
    # the 2-process metrics equal the 1-process ones of the same weights: the validation that
    # train.py ran in one process at iteration 4 (the checkpoint iter_4.pth) on the same split
    import re

    def metrics(text):
        found = re.findall(r'aAcc: ([0-9.]+)\s+mIoU: ([0-9.]+)\s+mAcc: ([0-9.]+)', text)
        assert found, text[-3000:]
        return found[-1]

    one, two = metrics(t.stdout + t.stderr), metrics(r.stdout + r.stderr)
    assert two == one


def test_slurm_scripts_call_the_tools_with_the_slurm_launcher(tmp_path, repo_root, run_cmd):
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'srun').write_text('#!/usr/bin/env bash\necho "SRUN $*"\n')
    (fake / 'srun').chmod(0o755)
    import os
    env = {'PATH': f'{fake}:{os.environ["PATH"]}', 'GPUS': '4', 'GPUS_PER_NODE': '4'}
    r = run_cmd(['bash', osp.join(repo_root, 'tools', 'slurm_train.sh'), 'part', 'job',
                 'configs/x.py', 'wd', '--amp'], env=env)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith('SRUN')][0]
    assert '-p part' in line and '--job-name=job' in line and '--ntasks=4' in line
    assert 'tools/train.py configs/x.py --work-dir=wd --launcher=slurm --amp' in line
    # options right after CONFIG are train.py's (mmseg's usage), not a work dir named '--resume'
    r = run_cmd(['bash', osp.join(repo_root, 'tools', 'slurm_train.sh'), 'part', 'job',
                 'configs/x.py', '--resume', '--cfg-options', 'a=1 b'], env=env)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith('SRUN')][0]
    assert line.endswith('tools/train.py configs/x.py --work-dir=work_dirs/x --launcher=slurm '
                         '--resume --cfg-options a=1 b')
    r = run_cmd(['bash', osp.join(repo_root, 'tools', 'slurm_test.sh'), 'part', 'job',
                 'configs/x.py', 'c.pth'], env=env)
    assert 'tools/test.py configs/x.py c.pth --launcher=slurm' in r.stdout


MMDET_TINY = '''
_base_ = [{base!r}]
data_root = {root!r}
model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                     num_heads=[1, 1, 2, 4], mlp_ratios=[2, 2, 2, 2],
                                     sr_ratios=[8, 4, 2, 1]), init_cfg=None),
             neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
             bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1),
             test_cfg=dict(score_thr=0.0))  # an untrained detector must still predict boxes
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(128, 96), keep_ratio=True),
                  dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 96), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor'))]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
'''

MMPRETRAIN_TINY = '''
_base_ = [{base!r}]
data_root = {root!r}
model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=1, num_heads=2,
                                     mlp_ratio=2), img_size=32, patch_size=8),
             head=dict(in_channels=32), train_cfg=None)
param_scheduler = []
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_pipeline = train_pipeline
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
'''


@pytest.mark.parametrize('kind', ['mmdet', 'mmpretrain'])
def test_train_and_test_mmdet_and_mmpretrain_configs(kind, tmp_path, repo_root, toy_coco,
                                                      toy_imagenet, tool_log):
    if kind == 'mmdet':
        base = osp.join(repo_root, 'configs/baselines/retinanet_pvtv2-b2_fpn_1x_coco.py')
        text, root, metric = MMDET_TINY.format(base=base, root=toy_coco), toy_coco, 'bbox_mAP'
    else:
        base = osp.join(repo_root, 'configs/baselines/deit-small_4xb256_in1k.py')
        text = MMPRETRAIN_TINY.format(base=base, root=toy_imagenet)
        metric = 'accuracy/top1'
    cfg = tmp_path / f'{kind}.py'
    cfg.write_text(text)
    wd = tmp_path / 'wd'
    assert metric in tool_log('train.py', wd, cfg)
    assert metric in tool_log('test.py', wd, cfg, wd / 'epoch_1.pth', '--out', tmp_path / 'p.pkl')
    import pickle
    with open(tmp_path / 'p.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 if kind == 'mmdet' else len(preds) > 0
    if kind == 'mmdet':  # mmdet's own dump: the predictions without the ground truth
        assert all('pred_instances' in p and 'gt_instances' not in p for p in preds)
    else:
        assert all('pred_score' in p for p in preds)


def test_show_and_tta_config_changes(tmp_path, repo_root, tool_mains):
    """``--show`` / ``--wait-time`` reach the codebase's visualization hook; ``--tta`` on an
    mmpretrain config without TTA settings averages the image and its flip (mmpretrain's own
    test tool's default), and is one line on a config of another codebase without them."""
    from mmengine.config import Config

    from mmdyn.utils.cli import ToolError
    test_tool = types.SimpleNamespace(**tool_mains['test.py'].__globals__)
    seg = Config.fromfile(osp.join(repo_root, QUICKSTART))
    test_tool.enable_drawing(seg, None, True, 0.5)
    hook = seg.default_hooks.visualization
    assert hook.draw and hook.show and hook.wait_time == 0.5 and hook.interval == 1
    assert seg.visualizer.get('save_dir') is None  # nothing written without --show-dir
    cls = Config.fromfile(osp.join(repo_root, 'configs/baselines/deit-small_4xb256_in1k.py'))
    plain = cls.model.copy()
    pack = cls.test_dataloader.dataset.pipeline[-1]
    test_tool.enable_tta(cls)
    assert cls.model.type == 'mmpretrain.AverageClsScoreTTA' and cls.model.module == plain
    tta = cls.test_dataloader.dataset.pipeline[-1]
    assert tta.type == 'TestTimeAug' and tta.transforms[1] == [pack]
    assert sorted(t.prob for t in tta.transforms[0]) == [0.0, 1.0]
    seg = Config.fromfile(osp.join(repo_root, QUICKSTART))
    seg.tta_model = None
    with pytest.raises(ToolError, match='--tta needs tta_model in the config'):
        test_tool.enable_tta(seg)
