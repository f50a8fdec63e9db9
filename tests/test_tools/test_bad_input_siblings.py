"""Bad input beyond the model (issue 19, siblings): a misspelt type or argument or a bad value of
the optimizer, schedulers, data loaders, pipelines, evaluators and hooks is one line naming the
config key path, before the Runner logs the config; a misspelt backbone argument names the
backbone of the config and the closest valid name."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmdyn.utils.arguments import accepted_arguments, check_arguments, closest

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = osp.join(REPO, 'configs', '_tiny_', 'fpn_dge-pvt-tiny_toy-ade20k.py')


def _tool(name):
    spec = importlib.util.spec_from_file_location('_siblings_' + name,
                                                  osp.join(REPO, 'tools', name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def tools():
    return dict(train=_tool('train'), test=_tool('test'))


def fails(capsys, fn, argv, code=2):
    """``fn(argv)`` exits with ``code``, one line on stderr and no config dump: that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    out, err = capsys.readouterr()
    assert e.value.code == code, err[-2000:]
    assert 'Traceback' not in err and 'Config:' not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def _train_line(tools, capsys, root, tmp_path, *opts):
    data = [f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')]
    return fails(capsys, tools['train'].main,
                 [SEG, '--work-dir', str(tmp_path), '--cfg-options', *data, *opts])


@pytest.mark.parametrize('opt, expect', [
    ('optim_wrapper.optimizer.lr=-1', 'optim_wrapper: Invalid learning rate: -1'),
    ('optim_wrapper.optimizer.type=AdamWW',
     "optim_wrapper.optimizer.type: unknown type 'AdamWW' (not in the mmseg::optimizer "
     "registry) (did you mean 'AdamW'?)"),
    ('optim_wrapper.optimizer.betaz=1',
     "optim_wrapper.optimizer: AdamW: unexpected argument 'betaz' (did you mean 'betas'?)"),
    ('param_scheduler.0.powr=1',
     "param_scheduler.0: PolyLR: unexpected argument 'powr' (did you mean 'power'?)"),
    ('train_dataloader.dataset.type=ADE20KDatasett',
     "train_dataloader.dataset.type: unknown type 'ADE20KDatasett' (not in the mmseg::dataset "
     "registry) (did you mean 'ADE20KDataset'?)"),
    ('train_dataloader.dataset.reduce_zero_labell=1',
     "train_dataloader.dataset: ADE20KDataset: unexpected argument 'reduce_zero_labell' (did "
     "you mean 'reduce_zero_label'?)"),
    ('train_dataloader.dataset.pipeline.0.type=LoadImageFromFil',
     "train_dataloader.dataset.pipeline.0.type: unknown type 'LoadImageFromFil' (not in the "
     "mmseg::transform registry) (did you mean 'LoadImageFromFile'?)"),
    ('val_dataloader.batch_size=0', 'val_dataloader.batch_size must be a positive integer, got 0'),
    ('custom_hooks.0.intervall=3',
     "custom_hooks.0: DynamicStatsHook: unexpected argument 'intervall' (did you mean "
     "'interval'?)"),
    ('default_hooks.logger.intervall=3',
     "default_hooks.logger: LoggerHook: unexpected argument 'intervall' (did you mean "
     "'interval'?)"),
])
def test_bad_runner_parts(seg_model, opt, expect):
    """The checks train.py runs before the Runner, on the tiny config with one override."""
    from mmengine.config import DictAction

    from mmdyn.utils.cli import ToolError, load_config
    from mmdyn.utils.preflight import check_runner_parts
    key, value = opt.split('=', 1)
    cfg = load_config(SEG, {key: DictAction._parse_iterable(value)})
    with pytest.raises(ToolError) as e:
        check_runner_parts(cfg, seg_model, ('train', 'val'))
    assert str(e.value) == expect


@pytest.fixture(scope='module')
def seg_model():
    from mmdyn.utils.cli import build_model, load_config
    return build_model(load_config(SEG))


def test_train_tool_one_line_before_the_runner(tools, capsys, toy_ade20k, tmp_path):
    line = _train_line(tools, capsys, toy_ade20k, tmp_path, 'optim_wrapper.optimizer.lr=-1')
    assert line == 'train.py: error: optim_wrapper: Invalid learning rate: -1'
    line = _train_line(tools, capsys, toy_ade20k, tmp_path, 'model.backbone.granularitie=(1,2)')
    assert line == ("train.py: error: the model cannot be built: model.backbone: DGEPVT: "
                    "unexpected argument 'granularitie' (did you mean 'granularities'?)")


@pytest.mark.parametrize('opt, expect', [
    # RandomResize hands **kwargs on to Resize: the transform is built to find out
    ('train_dataloader.dataset.pipeline.2.scalee=1',
     "train_dataloader.dataset.pipeline.2: Resize.__init__() got an unexpected keyword "
     "argument 'scalee'"),
    # a bare assert of the transform: the class is named all the same
    ('train_dataloader.dataset.pipeline.3.crop_size=(-1,5)',
     'train_dataloader.dataset.pipeline.3: RandomCrop: an argument has a value it does not '
     'accept (a check without a message; MMDYN_DEBUG=1 shows which)'),
    ('custom_hooks.0.type=DynamicStatsHookk',
     "custom_hooks.0.type: unknown type 'DynamicStatsHookk' (not in the mmseg::hook registry) "
     "(did you mean 'mmdyn.DynamicStatsHook'?)"),
])
def test_pipeline_values_and_hook_types(seg_model, opt, expect):
    test_bad_runner_parts(seg_model, opt, expect)


def test_test_tool_bad_loader_and_evaluator(tools, capsys, toy_ade20k, tmp_path):
    # test.py checks the test split only; the checkpoint is checked first, so use a real one
    import torch
    from mmdyn.utils.cli import build_model, load_config
    ckpt = str(tmp_path / 'w.pth')
    torch.save({'meta': {}, 'state_dict': build_model(load_config(SEG)).state_dict()}, ckpt)
    base = [SEG, ckpt, '--work-dir', str(tmp_path), '--cfg-options',
            f'test_dataloader.dataset.data_root={toy_ade20k}']
    line = fails(capsys, tools['test'].main, base + ['test_dataloader.batch_size=0'])
    assert line == 'test.py: error: test_dataloader.batch_size must be a positive integer, got 0'
    line = fails(capsys, tools['test'].main, base + ['test_evaluator.0.type=IoUMetrik'])
    assert line == ("test.py: error: test_evaluator.0.type: unknown type 'IoUMetrik' (not in "
                    "the mmseg::metric registry) (did you mean 'IoUMetric'?)")


def test_misspelt_arguments_name_every_backbone():
    from mmdyn.models import backbones as B
    cases = [(B.DGEPVT, 'granularitie', 'granularities'), (B.DGEViT, 'budgett', 'budget'),
             (B.DiT, 'budgte', 'budget'), (B.DoViT, 'img_sise', 'img_size'),
             (B.MSViT, 'coarse_sise', 'coarse_size'), (B.PVT, 'out_indice', 'out_indices'),
             (B.ViT, 'patch_sise', 'patch_size'), (B.T2TViT, 'token_dim', 'token_dims'),
             (B.DPVT, 'num_point', 'num_points')]
    for cls, bad, good in cases:
        with pytest.raises(TypeError) as e:
            cls(**{bad: 1})
        assert str(e.value) == (f'{cls.__name__}: unexpected argument {bad!r} '
                                f'(did you mean {good!r}?)')
    # DGEPVT's arguments are its own and its host's; nothing close: no suggestion
    assert {'granularities', 'budget', 'sr_norm_cfg', 'arch'} <= accepted_arguments(B.DGEPVT)
    with pytest.raises(TypeError, match=r"^PVT: unexpected argument 'zzz'$"):
        B.PVT(zzz=1)


def test_check_arguments_subclass_and_open_kwargs():
    class Base:
        def __init__(self, a=1):
            self.a = a

    @check_arguments
    class Host(Base):
        def __init__(self, b=2, **kwargs):
            super().__init__(**kwargs)

    class Sub(Host):  # not decorated: its own arguments are not refused by Host
        def __init__(self, c=3, **kwargs):
            super().__init__(**kwargs)

    assert Host(a=5, b=1).a == 5 and Sub(c=1, a=2).a == 2
    with pytest.raises(TypeError, match=r"^Host: unexpected argument 'bb' \(did you mean 'b'"):
        Host(bb=1)

    class Open:  # **kwargs that go nowhere known: anything may be accepted
        def __init__(self, **kwargs):
            pass

    class Mid(Open):
        def __init__(self, x=0, **kwargs):
            super().__init__(**kwargs)

    assert accepted_arguments(Mid) is None
    assert accepted_arguments(Host) == {'a', 'b'}
    assert accepted_arguments(Host, follow_kwargs=False) is None
    assert closest('lr', ['lr', 'betas']) == 'lr' and closest('zzzz', ['lr']) is None


def test_sixteen_bit_and_rgba_arrays_like_opencv_reads_the_files(tmp_path):
    """A 16-bit or BGRA array to the inference API is the image OpenCV reads from the same PNG
    in colour (what ``LoadImageFromFile`` does with a path), not 0..65535 values silently fed
    to a preprocessor normalising 0..255; a bool array is refused in one line."""
    import cv2
    import numpy as np

    from mmdyn.apis.inference import as_bgr_image
    rng = np.random.default_rng(0)
    for name, img in (('deep.png', rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)),
                      ('gray16.png', rng.integers(0, 65536, (5, 7), dtype=np.uint16)),
                      ('bgra.png', rng.integers(0, 256, (5, 7, 4), dtype=np.uint8))):
        path = str(tmp_path / name)
        assert cv2.imwrite(path, img)
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert raw.dtype == img.dtype and raw.shape == img.shape
        got = as_bgr_image(raw)
        assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
        np.testing.assert_array_equal(got, cv2.imread(path, cv2.IMREAD_COLOR))
    with pytest.raises(TypeError, match=r'^image has dtype bool; expected uint8'):
        as_bgr_image(np.zeros((4, 4, 3), bool))


@pytest.mark.parametrize('args, expect', [
    (['dist_train.sh', SEG, '0'], "dist_train.sh: error: NUM_PROCESSES must be a positive "
     "integer, got '0'"),
    (['dist_train.sh', SEG, 'two'], "dist_train.sh: error: NUM_PROCESSES must be a positive "
     "integer, got 'two'"),
    (['dist_test.sh', SEG, 'w.pth', '-1'], "dist_test.sh: error: NUM_PROCESSES must be a "
     "positive integer, got '-1'"),
    (['dist_test.sh', 'nope.py', 'w.pth', '2'],
     "dist_test.sh: error: config file 'nope.py' does not exist"),
])
def test_dist_scripts_bad_process_count(run_cmd, args, expect):
    r = run_cmd(['bash', osp.join(REPO, 'tools', args[0]), *args[1:]], timeout=60)
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.splitlines()[0].startswith(expect) and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize('name', ['dge2mmdyn', 'dovit2mmdyn'])
def test_converters_missing_or_odd_source(capsys, tmp_path, name):
    spec = importlib.util.spec_from_file_location(
        '_siblings_' + name, osp.join(REPO, 'tools', 'model_converters', name + '.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    missing, odd = str(tmp_path / 'missing.pth'), tmp_path / 'odd.pth'
    odd.write_bytes(b'not a checkpoint at all')
    line = fails(capsys, tool.main, [missing, str(tmp_path / 'out.pth')])
    assert line == f'{name}.py: error: not a readable checkpoint: {missing} (it does not exist)'
    line = fails(capsys, tool.main, [str(odd), str(tmp_path / 'out.pth')])
    assert line.startswith(f'{name}.py: error: not a readable checkpoint: {odd} (')
    assert not (tmp_path / 'out.pth').exists()
    # a readable checkpoint of another layout (a timm ViT): one line, nothing written (was: a
    # ValueError traceback)
    timm = tmp_path / 'timm.pth'
    torch.save({'model': {'cls_token': torch.zeros(1, 1, 8), 'blocks.0.norm1.weight':
                          torch.ones(8)}}, timm)
    line = fails(capsys, tool.main, [str(timm), str(tmp_path / 'out.pth')])
    want = ('not a vtpack DGE checkpoint' if name == 'dge2mmdyn' else
            'no "backbone.auxiliary_head.<k>." keys')
    assert line.startswith(f'{name}.py: error: {timm}: ') and want in line, line
    assert not (tmp_path / 'out.pth').exists()


def test_dovit_converter_checks_before_writing(capsys, tmp_path):
    """``dovit2mmdyn.py --config``: a conversion that does not fit the config's model is one
    line and writes nothing (was: the file written first, then a KeyError traceback); a DST
    that is a directory is one line."""
    from mmdyn.utils.cli import build_model, load_config
    ref = importlib.util.spec_from_file_location('_siblings_dovit_layout', osp.join(
        REPO, 'tests', 'test_models', 'test_segmentors', 'test_dovit_segmentor.py'))
    layouts = importlib.util.module_from_spec(ref)
    ref.loader.exec_module(layouts)  # the authors' key layout, written in that test
    _official_layout = layouts._official_layout
    spec = importlib.util.spec_from_file_location(
        '_siblings_dovit_check', osp.join(REPO, 'tools', 'model_converters', 'dovit2mmdyn.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = osp.join(REPO, 'configs', '_tiny_', 'setr_dovit-tiny_toy-ade20k.py')
    good = _official_layout(build_model(load_config(cfg)))
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save({k: v for k, v in good.items() if 'conv_seg' not in k or 'decode' not in k},
               src)
    line = fails(capsys, tool.main, [str(src), str(dst), '--config', cfg])
    assert line.startswith(f'dovit2mmdyn.py: error: {src} converted does not fit the model: '
                           'missing keys') and 'decode_head.conv_seg' in line
    assert not dst.exists()
    torch.save(good, src)
    tool.main([str(src), str(dst), '--config', cfg])
    assert dst.is_file()
    line = fails(capsys, tool.main, [str(src), str(tmp_path)])
    assert line == f'dovit2mmdyn.py: error: {tmp_path} is a directory, not a file to write'
