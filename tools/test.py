"""Test (evaluate) a checkpoint with an mmdet, mmseg, mmpretrain or mmdyn config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show-dir DIR]
        [--show-dynamic DIR] [--show] [--wait-time S] [--tta] [--cfg-options KEY=VALUE ...] [--allow-key-mismatch] [--launcher none|pytorch|slurm|mpi]

``--show-dynamic DIR`` draws every test image's token decisions (one panel per decision point
of the dynamic backbone) into ``DIR/<image name>.png`` (:class:`mmdyn.engine.hooks.DecisionMapHook`;
whole-image inference only: sliding windows keep the maps of the last window).

``--tta`` tests with the config's test-time augmentation, as the codebases' own test tools do:
``tta_model`` wraps the model and ``tta_pipeline`` replaces the test pipeline (mmpretrain
configs without them: averaged scores over the image and its horizontal flip). The realised
FLOPs of an image are then the sum over its views. ``--show`` shows each drawn prediction in a
window (``--wait-time`` seconds).

A checkpoint whose weights do not fit the config's model (missing or unexpected keys, other
shapes: a checkpoint of another config) is an error unless ``--allow-key-mismatch`` is given.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root

from mmengine.config import DictAction  # noqa: E402

PROG = 'test.py'


#: what ``--out`` writes with, per codebase (scope): the predictions only
DUMPS = dict(mmdet='mmdet.DumpDetResults', mmseg='mmdyn.DumpPredictions')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test (and evaluate) a model')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    p.add_argument('--out', help='dump the predictions to this pickle file')
    p.add_argument('--show-dir', help='draw every prediction into this directory')
    p.add_argument('--show-dynamic', metavar='DIR',
                   help='draw every test image\'s token decisions into this directory')
    p.add_argument('--show', action='store_true', help='show each prediction in a window')
    p.add_argument('--wait-time', type=float, default=2, help='seconds each shown prediction '
                   'stays (with --show)')
    p.add_argument('--tta', action='store_true', help='test-time augmentation: the config\'s '
                   'tta_model and tta_pipeline')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, KEY=VALUE')
    p.add_argument('--allow-key-mismatch', action='store_true',
                   help='test even if the checkpoint\'s weights do not fit the model (missing '
                   'or unexpected keys, other shapes); by default that is an error')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    from mmdyn.utils.cli import arg_error, check_output_path
    if args.out:  # before the test runs, not after it
        if not args.out.endswith(('.pkl', '.pickle')):
            arg_error(PROG, '--out must be a .pkl or .pickle file')
        check_output_path(PROG, '--out', args.out, 'file')
    for option, value in (('--show-dir', args.show_dir), ('--show-dynamic', args.show_dynamic)):
        if value:
            check_output_path(PROG, option, value, 'dir')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


#: the visualization hook of each codebase (scope)
DRAWING_HOOKS = dict(mmdet='DetVisualizationHook', mmseg='SegVisualizationHook',
                     mmpretrain='VisualizationHook')


def enable_drawing(cfg, show_dir=None, show=False, wait_time=2.0):
    """Turn on the codebase's visualization hook: every test image's prediction drawn into
    ``show_dir`` (the hooks' default intervals draw one image in 50 or 5000, and mmdet's puts a
    relative directory under the work dir's time stamp) and / or shown in a window."""
    from mmdyn.utils.cli import ToolError
    scope = cfg.get('default_scope')
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('visualization')
    if hook is None and scope in DRAWING_HOOKS and 'default_hooks' in cfg and \
            'visualization' not in hooks and cfg.get('visualizer') is not None:
        # a config without the schedule base that brings the hook: the codebase's own
        cfg.default_hooks['visualization'] = dict(type=DRAWING_HOOKS[scope])
        hook = cfg.default_hooks['visualization']  # the config's copy
    if hook is None:
        option = '--show-dir' if show_dir else '--show'
        raise ToolError(f'{option} needs a "visualization" entry in default_hooks')
    if show:
        hook.update(show=True, wait_time=wait_time)
    if scope == 'mmdet':
        hook.update(draw=True, interval=1)
        if show_dir:
            hook.update(test_out_dir=osp.abspath(show_dir))
    elif scope == 'mmpretrain':
        hook.update(enable=True, interval=1)
        if show_dir:
            hook.update(out_dir=osp.abspath(show_dir))
    else:  # mmseg and others draw into the visualizer's save_dir
        hook.update(draw=True, interval=1)
        if show_dir:
            cfg.visualizer['save_dir'] = osp.abspath(show_dir)


def enable_tta(cfg):
    """Test with the config's test-time augmentation, as mmdet's, mmseg's and mmpretrain's
    ``tools/test.py --tta`` do: ``tta_model`` wraps the model, ``tta_pipeline`` is the test
    pipeline. mmpretrain configs without them average the scores of the image and its flip."""
    import copy

    from mmengine.config import ConfigDict

    from mmdyn.utils.cli import ToolError
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':
        cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA'))
        if 'tta_pipeline' not in cfg:
            pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
            pack = pipeline[-1]
            pipeline[-1] = dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)], [pack]])
            cfg.tta_pipeline = pipeline
    missing = [k for k in ('tta_model', 'tta_pipeline') if cfg.get(k, None) is None]
    if missing:
        raise ToolError(f'--tta needs {" and ".join(missing)} in the config')
    dataset = cfg.test_dataloader.dataset
    while 'pipeline' not in dataset and isinstance(dataset.get('dataset'), dict):
        dataset = dataset.dataset  # a wrapped data set
    dataset.pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)


def main(argv=None):
    args = parse_args(argv)
    from mmdyn.utils.cli import (build_model, check_checkpoint, check_data_roots,
                                 check_weights_match, friendly_errors, load_config)
    from mmdyn.utils.preflight import check_runner_parts
    with friendly_errors(PROG):
        cfg = load_config(args.config, args.cfg_options)
        cfg.launcher = args.launcher
        from mmdyn.utils.dist import check_launcher_env
        check_launcher_env(args.launcher)
        if args.work_dir is not None:
            cfg.work_dir = args.work_dir
        elif cfg.get('work_dir', None) is None:
            cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
        ckpt = check_checkpoint(args.checkpoint)
        from mmdyn.utils.checkpoint import loadable_checkpoint
        # weights under 'model' / 'model_state_dict' / 'module' would load nothing
        cfg.load_from = loadable_checkpoint(args.checkpoint, ckpt, cfg.work_dir) if ckpt \
            else args.checkpoint
        check_data_roots(cfg, ('test', ))
        # a bad value or argument of the model: one line, before the Runner logs the config
        model = build_model(cfg)
        if ckpt and not args.allow_key_mismatch:
            check_weights_match(model, ckpt, args.checkpoint,
                                ' (another config? --allow-key-mismatch tests it anyway)')
        if args.show_dynamic:
            from mmdyn.models.utils.dynamic import find_dynamic_modules
            if not find_dynamic_modules(model):
                from mmdyn.utils.cli import ToolError
                raise ToolError('--show-dynamic: the model has no dynamic module (a static '
                                'config?), so there are no decisions to draw')
            hooks = list(cfg.get('custom_hooks', None) or [])
            cfg.custom_hooks = hooks + [dict(type='mmdyn.DecisionMapHook',
                                             out_dir=osp.abspath(args.show_dynamic))]
        del model, ckpt
        # the parts the Runner builds late (data, evaluators, hooks): one line, before it starts
        check_runner_parts(cfg, splits=('test', ))
        if args.show_dir or args.show:
            enable_drawing(cfg, args.show_dir, args.show, args.wait_time)
        if args.tta:
            enable_tta(cfg)
        if args.out:
            # the codebase's dump: mmdet's encodes the masks and leaves out the ground truth,
            # mmseg's samples go without their per-class logits and ground truth
            dump = dict(type=DUMPS.get(cfg.get('default_scope'), 'DumpResults'),
                        out_file_path=args.out)
            ev = cfg.test_evaluator
            cfg.test_evaluator = (list(ev) if isinstance(ev, (list, tuple)) else [ev]) + [dump]

        from mmdyn.utils.dist import close_distributed, setup_cpu_distributed
        setup_cpu_distributed(cfg, args.launcher)

        from mmengine.registry import RUNNERS
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        runner.test()
        del runner  # see close_distributed: the runner must go before the group
        close_distributed()


if __name__ == '__main__':
    main()
