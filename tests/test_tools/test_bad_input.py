"""Bad input to the tools: one line naming the problem, nothing silently wrong (issue 19).

The tools run in this process (their ``main``), so each check costs no interpreter start; a
failing run ends in ``SystemExit`` with the status, its one line on stderr."""
import importlib.util
import os.path as osp
import shutil

import mmcv
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(REPO, 'configs', '_tiny_')
SEG = osp.join(TINY, 'fpn_dge-pvt-tiny_toy-ade20k.py')
OTHER = osp.join(TINY, 'fpn_dit-tiny_toy-ade20k.py')


def _tool(*parts):
    path = osp.join(REPO, *parts)
    spec = importlib.util.spec_from_file_location('_bad_input_' + parts[-1][:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def tools():
    return dict(train=_tool('tools', 'train.py'), test=_tool('tools', 'test.py'),
                flops=_tool('tools', 'analysis_tools', 'get_flops.py'),
                bench=_tool('tools', 'analysis_tools', 'benchmark.py'),
                vis=_tool('tools', 'analysis_tools', 'visualize_dynamic.py'),
                demo=_tool('demo', 'image_demo.py'),
                skip=_tool('tools', 'analysis_tools', 'dit_skip_stats.py'),
                thr=_tool('tools', 'analysis_tools', 'dvt_thresholds.py'))


def fails(capsys, fn, argv, code=2):
    """Run ``fn(argv)``; it must exit with ``code`` and one line on stderr: return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    out, err = capsys.readouterr()
    assert e.value.code == code, err[-2000:]
    assert 'Traceback' not in err and 'Config:' not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    """A checkpoint of the DGE-PVT tiny config, one of the DiT tiny config (another model), a
    truncated copy of the first and random bytes."""
    from mmdyn.utils.cli import build_model, load_config
    d = tmp_path_factory.mktemp('ckpts')
    out = {}
    for name, cfg in (('seg', SEG), ('other', OTHER)):
        torch.manual_seed(0)
        model = build_model(load_config(cfg))
        out[name] = str(d / f'{name}.pth')
        torch.save({'meta': {'iter': 0}, 'state_dict': model.state_dict()}, out[name])
    data = open(out['seg'], 'rb').read()
    out['truncated'] = str(d / 'truncated.pth')
    open(out['truncated'], 'wb').write(data[:len(data) // 2])
    out['random'] = str(d / 'random.pth')
    open(out['random'], 'wb').write(np.random.default_rng(0).bytes(4096))
    return out


def data_opts(root):
    return [f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')]


# ------------------------------------------------------------------ train.py / test.py
def test_bad_backbone_value_and_misspelt_argument(tools, capsys, toy_ade20k, tmp_path, ckpts):
    wd = ['--work-dir', str(tmp_path)]
    line = fails(capsys, tools['train'].main,
                 [SEG, *wd, '--cfg-options', *data_opts(toy_ade20k), 'model.backbone.budget=2'])
    assert line == ('train.py: error: the model cannot be built: DGE: the budget gamma must be '
                    'in [0, 1], got 2')
    line = fails(capsys, tools['train'].main,
                 [SEG, *wd, '--cfg-options', *data_opts(toy_ade20k), 'model.backbone.budgett=1'])
    # DGEPVT hands unknown arguments on to its host, PVT, but the message names DGEPVT
    assert line == ("train.py: error: the model cannot be built: model.backbone: DGEPVT: "
                    "unexpected argument 'budgett' (did you mean 'budget'?)")
    line = fails(capsys, tools['test'].main,
                 [SEG, ckpts['seg'], *wd, '--cfg-options', *data_opts(toy_ade20k),
                  'model.backbone.budget_weight=-1'])
    assert line == ('test.py: error: the model cannot be built: DGE: budget_weight must be a '
                    'finite number >= 0, got -1')


def test_unreadable_checkpoints(tools, capsys, toy_ade20k, tmp_path, ckpts):
    opts = ['--cfg-options', *data_opts(toy_ade20k)]
    bad = ckpts['truncated']
    expect = f'not a readable checkpoint: {bad} (truncated or corrupt)'
    wd = tmp_path / 'wd'
    assert fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(wd), '--resume', bad, *opts]) == f'train.py: error: {expect}'
    # a bare --resume takes the latest checkpoint of the work dir: the same line
    wd.mkdir(exist_ok=True)
    (wd / 'last_checkpoint').write_text(bad)
    assert fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(wd), '--resume', *opts]) == f'train.py: error: {expect}'
    assert fails(capsys, tools['test'].main, [SEG, bad, '--work-dir', str(wd), *opts]) == \
        f'test.py: error: {expect}'
    rnd = ckpts['random']
    assert fails(capsys, tools['test'].main, [SEG, rnd, '--work-dir', str(wd), *opts]) == \
        f'test.py: error: not a readable checkpoint: {rnd} (not a torch checkpoint: ' \
        'unrecognised bytes)'


def test_checkpoint_of_another_config(tools, capsys, toy_ade20k, tmp_path, ckpts):
    opts = ['--cfg-options', *data_opts(toy_ade20k)]
    other = ckpts['other']
    line = fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(tmp_path), '--resume', other, *opts])
    assert line.startswith(f'train.py: error: checkpoint {other} does not fit the model of the '
                           'config: ')
    assert 'keys missing (e.g. backbone.' in line and line.endswith(
        '; was it written by another config?')
    line = fails(capsys, tools['test'].main, [SEG, other, '--work-dir', str(tmp_path), *opts])
    assert line.startswith(f'test.py: error: checkpoint {other} does not fit the model')
    assert line.endswith('(another config? --allow-key-mismatch tests it anyway)')
    # the user may opt out: the run then tests (here: exits normally)
    tools['test'].main([SEG, other, '--work-dir', str(tmp_path), '--allow-key-mismatch', *opts])
    # the matching checkpoint passes the check
    tools['test'].main([SEG, ckpts['seg'], '--work-dir', str(tmp_path), *opts])


def test_empty_data_root_and_missing_coco_annotations(tools, capsys, tmp_path, toy_coco):
    empty = tmp_path / 'empty'
    empty.mkdir()
    line = fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(tmp_path), '--cfg-options', *data_opts(empty)])
    assert line.startswith(f"train.py: error: data root '{empty}' of train_dataloader is empty")
    coco = tmp_path / 'coco'
    shutil.copytree(toy_coco, coco)
    shutil.rmtree(coco / 'annotations')
    det = osp.join(TINY, 'retinanet_dit-tiny_toy-coco.py')
    line = fails(capsys, tools['train'].main,
                 [det, '--work-dir', str(tmp_path), '--cfg-options', *data_opts(f'{coco}/')])
    assert line.startswith(f"train.py: error: annotation file '{coco}/annotations/instances_"
                           "train2017.json' of train_dataloader does not exist")


def test_amp_without_gpu(tools, capsys, toy_ade20k, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    line = fails(capsys, tools['train'].main,
                 [SEG, '--amp', '--work-dir', str(tmp_path), '--cfg-options',
                  *data_opts(toy_ade20k)])
    assert line == ("train.py: error: --amp needs a CUDA GPU (mmengine's AmpOptimWrapper) and "
                    'none is available; train without --amp')


def test_bad_schedules_before_training(tools, capsys, toy_ade20k, tmp_path):
    cfg = tmp_path / 'sched.py'
    cfg.write_text(f'_base_ = [{SEG!r}]\ncustom_hooks = [dict(type="mmdyn.DynamicScheduleHook", '
                   'schedules=[dict(path="backbone.budget_loss.targte", type="constant", '
                   'value=0.5)])]\n')
    line = fails(capsys, tools['train'].main,
                 [str(cfg), '--work-dir', str(tmp_path), '--cfg-options', *data_opts(toy_ade20k)])
    assert line == ("train.py: error: DynamicScheduleHook: path 'backbone.budget_loss.targte' "
                    "does not exist: 'backbone.budget_loss' (BudgetLoss) has no attribute "
                    "'targte'")
    dovit = tmp_path / 'dovit.py'
    dovit.write_text(f"_base_ = [{osp.join(TINY, 'setr_dovit-tiny_toy-ade20k.py')!r}]\n"
                     'custom_hooks = [dict(type="mmdyn.DynamicScheduleHook", schedules=['
                     'dict(path="backbone.threshold", type="linear", start_value=0.9, '
                     'end_value=1.1, end=4)])]\n')
    line = fails(capsys, tools['train'].main,
                 [str(dovit), '--work-dir', str(tmp_path), '--cfg-options',
                  *data_opts(toy_ade20k)])
    assert line == ("train.py: error: DynamicScheduleHook: the schedule of 'backbone.threshold' "
                    'reaches 1.1, outside the range [0, 1] of DoViT.threshold')


# ------------------------------------------------------------------ analysis tools and demo
def test_get_flops_and_benchmark_small_shapes_and_bad_checkpoints(tools, capsys, ckpts):
    for tool in (tools['flops'], tools['bench']):
        extra = ['--repeats', '1', '--warmup', '0', '--system-malloc'] \
            if tool is tools['bench'] else \
            ['--num-images', '1']
        assert tool.main([SEG, '--shape', '3', '3', '--json', *extra]) == 0
        capsys.readouterr()
        for name, why in (('truncated', 'truncated or corrupt'),
                          ('missing', 'it does not exist')):
            path = ckpts.get(name, '/nowhere/missing.pth')
            assert tool.main([SEG, '--checkpoint', path, *extra]) == 1
            err = capsys.readouterr().err.strip()
            assert err == f'error: not a readable checkpoint: {path} ({why})'


def test_visualize_dynamic_errors(tools, capsys, tmp_path, ckpts):
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    text = tmp_path / 'b.png'
    text.write_text('not an image')
    out = ['--out', str(tmp_path / 'o')]
    main = tools['vis'].main
    assert fails(capsys, main, [SEG, str(tmp_path / 'none.png'), *out]) == \
        f'visualize_dynamic.py: error: image {tmp_path / "none.png"} does not exist'
    assert fails(capsys, main, [SEG, str(text), *out]) == \
        f'visualize_dynamic.py: error: image {text} is not a readable image'
    assert fails(capsys, main, [SEG, '/nowhere/c.pth', img, *out]) == \
        'visualize_dynamic.py: error: not a readable checkpoint: /nowhere/c.pth (it does not ' \
        'exist)'
    bad = ckpts['truncated']
    assert fails(capsys, main, [SEG, bad, img, *out]) == \
        f'visualize_dynamic.py: error: not a readable checkpoint: {bad} (truncated or corrupt)'
    static = osp.join(REPO, 'configs', 'baselines', 'fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py')
    assert fails(capsys, main, [static, img, *out]) == (
        f'visualize_dynamic.py: error: the model of {static} has no dynamic module: there are '
        'no token decisions to draw (a static config?)')
    assert fails(capsys, main, [SEG, img, '--alpha', '2', *out]) == \
        'visualize_dynamic.py: error: --alpha must be in [0, 1], got 2.0'


def test_image_demo_errors(tools, capsys, tmp_path, ckpts):
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    text = tmp_path / 'b.png'
    text.write_text('not an image')
    main = tools['demo'].main
    out = ['--out-file', str(tmp_path / 'o.png')]
    assert fails(capsys, main, [img, SEG, ckpts['seg'], '--opacity', '5', *out]) == \
        'image_demo.py: error: --opacity must be in [0, 1], got 5.0'
    assert fails(capsys, main, [str(text), SEG, ckpts['seg'], *out]) == \
        f'image_demo.py: error: image {text} is not a readable image'
    assert fails(capsys, main, [img, SEG, ckpts['truncated'], *out]) == \
        f'image_demo.py: error: not a readable checkpoint: {ckpts["truncated"]} (truncated or ' \
        'corrupt)'


def test_output_paths_that_cannot_be_written(tools, capsys, tmp_path, ckpts):
    """An output whose directory is a file, a directory given as a file (or the reverse), an
    image extension OpenCV cannot write: one line before any work (it was a traceback, for
    image_demo after the whole inference)."""
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    afile = tmp_path / 'f'
    afile.write_text('')
    demo = [img, SEG, ckpts['seg'], '--out-file']
    assert fails(capsys, tools['demo'].main, demo + [str(tmp_path / 'o.txt')]) == \
        f'image_demo.py: error: --out-file {tmp_path / "o.txt"}: expected a file ending in ' \
        '.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp'
    assert fails(capsys, tools['demo'].main, demo + [str(afile / 'sub' / 'o.png')]) == \
        f'image_demo.py: error: --out-file {afile / "sub" / "o.png"}: {afile} is a file, not ' \
        'a directory'
    assert fails(capsys, tools['demo'].main, demo + [str(tmp_path)]) == \
        f'image_demo.py: error: --out-file {tmp_path} is a directory, not a file'
    assert fails(capsys, tools['vis'].main, [SEG, img, '--out', str(afile)]) == \
        f'visualize_dynamic.py: error: --out {afile} is a file, not a directory'
    assert fails(capsys, tools['skip'].main, [SEG, '--out', str(afile)]) == \
        f'dit_skip_stats.py: error: --out {afile} is a file, not a directory'
    assert fails(capsys, tools['thr'].main, ['--preds', 'p.npz', '--out',
                                             str(afile / 'th.json')]) == \
        f'dvt_thresholds.py: error: --out {afile / "th.json"}: {afile} is a file, not a directory'
    assert fails(capsys, tools['thr'].main, ['--preds', 'p.npz', '--plot', 'p.txt']) == \
        'dvt_thresholds.py: error: --plot p.txt: expected a file ending in .png, .jpg, .pdf, .svg'


def test_image_demo_refuses_other_weights_before_loading_them(tools, capsys, tmp_path, ckpts):
    """The mismatch is found before the codebase's builder loads the checkpoint (which logs
    every missing and unexpected key first)."""
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tools['demo'].main([img, SEG, ckpts['other'], '--out-file', str(tmp_path / 'o.png')])
    out, err = capsys.readouterr()
    assert 'missing keys' not in (out + err).lower() and len(out) < 200, out[-2000:]
    assert err.startswith(f'image_demo.py: error: checkpoint {ckpts["other"]} does not fit')


def test_unusable_device(tools, capsys, tmp_path, monkeypatch):
    """A sibling of --amp without a GPU: --device cuda where there is none, or a bad name."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    assert tools['flops'].main([SEG, '--device', 'cuda']) == 1
    assert capsys.readouterr().err == 'error: --device cuda: CUDA is not available\n'
    assert fails(capsys, tools['vis'].main, [SEG, img, '--device', 'cuda:1', '--out',
                                             str(tmp_path)]) == \
        'visualize_dynamic.py: error: --device cuda:1: CUDA is not available'
    assert fails(capsys, tools['demo'].main, [img, SEG, '--device', 'gpu0', '--out-file',
                                              str(tmp_path / 'o.png'), 'x.pth']) == \
        "image_demo.py: error: --device gpu0: not a device name (cpu, cuda, cuda:0, ...)"


def test_resume_with_another_optimizer(tools, capsys, toy_ade20k, tmp_path, ckpts):
    """A sibling of item 9: the weights fit, the optimizer state (two parameter groups, where
    the config's optimizer has one: no paramwise_cfg) does not."""
    from mmengine.logging import MessageHub
    ckpt = torch.load(ckpts['seg'])
    ckpt['meta'] = dict(epoch=0, iter=1)
    ckpt['message_hub'] = MessageHub.get_instance('bad_input_hub').state_dict()
    ckpt['optimizer'] = dict(state={}, param_groups=[dict(lr=0.1, params=[0]),
                                                     dict(lr=0.1, params=[1])])
    path = str(tmp_path / 'other_optim.pth')
    torch.save(ckpt, path)
    line = fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(tmp_path), '--resume', path, '--cfg-options',
                  *data_opts(toy_ade20k)])
    assert line == (f'train.py: error: checkpoint {path}: its optimizer state does not fit the '
                    "optimizer of the config (2 parameter groups, the config's optimizer has "
                    '1); was it written by another config?')


def test_analysis_tools_refuse_weights_of_another_model(tools, capsys, tmp_path, ckpts):
    """A sibling of item 17: get_flops, benchmark, visualize_dynamic and image_demo loaded a
    checkpoint of another config with warnings only (random weights, silently)."""
    other = ckpts['other']
    start = f'checkpoint {other} does not fit the model of the config: '
    for tool, extra in ((tools['flops'], ['--num-images', '1']),
                        (tools['bench'], ['--repeats', '1', '--warmup', '0',
                                          '--system-malloc'])):
        assert tool.main([SEG, '--checkpoint', other, *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: ' + start) and err.count('\n') == 1
    img = str(tmp_path / 'a.png')
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), img)
    assert fails(capsys, tools['vis'].main, [SEG, other, img, '--out', str(tmp_path)]).startswith(
        'visualize_dynamic.py: error: ' + start)
    assert fails(capsys, tools['demo'].main,
                 [img, SEG, other, '--out-file', str(tmp_path / 'o.png')]).startswith(
        'image_demo.py: error: ' + start)


def test_unwritable_outputs_found_late_are_one_line(capsys):
    """An output the path checks could not foresee (a permission, a system directory) fails
    in one line naming the path; other OS errors stay tracebacks (a bug, not an input)."""
    import errno

    from mmdyn.utils.cli import friendly_errors, one_line
    for exc in (FileExistsError(errno.EEXIST, 'File exists', '/w/out'),
                PermissionError(errno.EACCES, 'Permission denied', '/w/out'),
                NotADirectoryError(errno.ENOTDIR, 'Not a directory', '/w/out/x')):
        assert one_line(exc) == f'cannot write {exc.filename}: {exc.strerror}'
    assert one_line(OSError(errno.EIO, 'I/O error')) is None
    assert one_line(FileExistsError(errno.EEXIST, 'File exists')) is None  # no path: a bug
    with pytest.raises(SystemExit) as e, friendly_errors('tool.py'):
        raise PermissionError(errno.EACCES, 'Permission denied', '/w/out.png')
    assert e.value.code == 2
    assert capsys.readouterr().err == 'tool.py: error: cannot write /w/out.png: Permission ' \
        'denied\n'


def test_analysis_tools_refuse_other_weights_and_odd_values(tools, capsys, tmp_path, ckpts,
                                                            toy_ade20k, toy_imagenet):
    """dit_skip_stats.py and dvt_thresholds.py (config mode) on a checkpoint of another model:
    one line (was: a "missing keys" warning, then statistics / thresholds of random weights
    and exit 0); a non-DiT config, odd counts, a bad --preds file, a budget below the first
    exit, --cfg-options without '=': one line each (were tracebacks)."""
    opts = ['--cfg-options', *data_opts(toy_ade20k)]
    # a DiT config, a checkpoint of the DGE config
    line = fails(capsys, tools['skip'].main, [OTHER, ckpts['seg'], '--out', str(tmp_path / 'o'),
                                              *opts])
    assert line.startswith(f'dit_skip_stats.py: error: checkpoint {ckpts["seg"]} does not fit')
    assert not (tmp_path / 'o').exists()
    line = fails(capsys, tools['skip'].main, [SEG, '--out', str(tmp_path / 'o'), *opts])
    assert line == ('dit_skip_stats.py: error: the model has no mmdyn.DiT module (is '
                    f'{SEG} a DiT config?)')
    dvt = osp.join(TINY, 'dvt-tiny_toy-imagenet.py')
    from mmengine.logging import MMLogger
    MMLogger._instance_dict.clear()  # loggers of earlier tests write to their closed capture
    line = fails(capsys, tools['thr'].main, [
        dvt, '--checkpoint', ckpts['seg'], '--budget', '1', '--split', 'val', '--out',
        str(tmp_path / 'd.json'), '--cfg-options', f"val_dataloader.dataset.data_root='{toy_imagenet}'"])
    assert line.startswith(f'dvt_thresholds.py: error: checkpoint {ckpts["seg"]} does not fit')
    assert not (tmp_path / 'd.json').exists()
    preds = tmp_path / 'p.npz'
    np.savez(preds, conf=np.array([[0.9, 0.2], [0.95, 0.9]]),
             correct=np.array([[1, 0], [1, 1]]), exit_gflops=np.array([1.0, 2.0]))
    bad = tmp_path / 'bad.npz'
    np.savez(bad, conf=np.zeros((2, 3)), correct=np.zeros((2, 3)), exit_gflops=np.ones(3))
    for argv, msg in (
            (['--preds', str(preds), '--budget', '0.5', '--out', str(tmp_path / 'x.json')],
             "budget 0.5 is below the first exit's cost 1 GFLOPs"),
            (['--preds', str(preds), '--budget', '1'], 'no --out given'),
            (['--preds', str(tmp_path / 'none.npz'), '--budget', '1'], 'does not exist'),
            (['--preds', str(bad), '--budget', '1'], 'exit_gflops do not match'),
            (['--preds', str(preds), '--budget', '1', '--num-budgets', '0'],
             '--num-budgets must be >= 1, got 0'),
            ([dvt, '--budget', '1', '--max-batches', '0'], '--max-batches must be >= 1, got 0'),
            ([dvt, '--exit-shares', '0.5', '--generated', '0'], '--generated must be >= 1'),
            ([dvt, '--budget', '1', '--cfg-options', 'model.foo'],
             "--cfg-options takes KEY=VALUE, got 'model.foo'")):
        line = fails(capsys, tools['thr'].main, argv)
        assert line.startswith('dvt_thresholds.py: error: ') and msg in line, (argv, line)
    # the good file solves (the check is not in the way)
    assert tools['thr'].main(['--preds', str(preds), '--budget', '1.5', '--out',
                              str(tmp_path / 'ok.json')]) == 0
