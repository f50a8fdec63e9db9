"""Train a model from an mmdet, mmseg, mmpretrain or mmdyn config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--no-validate] [--no-pin-memory] [--no-persistent-workers]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

The config's ``default_scope`` decides which codebase's registries build it. With the pytorch
launcher (``tools/dist_train.sh``) and no GPU, processes talk over gloo on the CPU.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root

from mmengine.config import DictAction  # noqa: E402

PROG = 'train.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a model')
    p.add_argument('config', help='train config file path')
    p.add_argument('--work-dir', help='the dir to save logs and models')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir '
                   'when CKPT is not given')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the learning rate with the total batch size')
    p.add_argument('--no-validate', action='store_true',
                   help='train without validating (no val loop, data or evaluator)')
    p.add_argument('--no-pin-memory', action='store_true',
                   help='pin_memory=False for every data loader')
    p.add_argument('--no-persistent-workers', action='store_true',
                   help='persistent_workers=False for every data loader')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, KEY=VALUE')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def add_random_state_hook(cfg) -> None:
    """Checkpoints carry the random-number state and a resume restores it
    (:class:`mmdyn.engine.RandomStateHook`), unless the config has the hook already."""
    import mmdyn.engine  # noqa: F401  (registers the hook)
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(str(h.get('type', '')).split('.')[-1] == 'RandomStateHook' for h in hooks):
        hooks.append(dict(type='mmdyn.RandomStateHook'))
    cfg.custom_hooks = hooks


def main(argv=None):
    args = parse_args(argv)
    from mmdyn.utils.cli import (ToolError, build_model, check_checkpoint, check_data_roots,
                                 check_optimizer_match, check_schedule_hooks,
                                 check_weights_match, friendly_errors, latest_checkpoint,
                                 load_config)
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

        if args.amp:
            import torch
            if not torch.cuda.is_available():
                raise ToolError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper) and none '
                                'is available; train without --amp')
            optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
            if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
                raise ToolError(f'--amp needs OptimWrapper, not {optim_wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

        if args.auto_scale_lr:
            scale = cfg.get('auto_scale_lr')
            if not isinstance(scale, dict) or 'base_batch_size' not in scale:
                raise ToolError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                                'config')
            cfg.auto_scale_lr.enable = True

        resume_from = None
        if args.resume == 'auto':
            cfg.resume = True
            cfg.load_from = None
            resume_from = latest_checkpoint(cfg.work_dir)  # None: nothing to resume, start
        elif args.resume is not None:
            cfg.resume = True
            cfg.load_from = resume_from = args.resume
        elif cfg.get('load_from'):
            ckpt = check_checkpoint(cfg.load_from)
            if ckpt:  # weights under 'model' / 'model_state_dict' / 'module' would load nothing
                from mmdyn.utils.checkpoint import loadable_checkpoint
                cfg.load_from = loadable_checkpoint(cfg.load_from, ckpt, cfg.work_dir)
            del ckpt

        if args.no_validate:  # as mmpretrain's train.py
            cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        for split in ('train', 'val', 'test'):
            loader = cfg.get(f'{split}_dataloader', None)
            if isinstance(loader, dict):
                if args.no_pin_memory:
                    loader['pin_memory'] = False
                if args.no_persistent_workers:
                    loader['persistent_workers'] = False
        check_data_roots(cfg, ('train', ) if args.no_validate else ('train', 'val'))
        # a bad value or argument of the model: one line, before the Runner logs the config
        model = build_model(cfg)
        check_schedule_hooks(cfg, model)
        # the parts the Runner builds late (optimizer, data, hooks): one line, before it starts
        check_runner_parts(cfg, model, ('train', 'val'))
        if resume_from is not None:
            ckpt = check_checkpoint(resume_from)
            if ckpt:
                check_weights_match(model, ckpt, resume_from,
                                    '; was it written by another config?')
            meta = ckpt.get('meta') if ckpt else None
            if ckpt and not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta
                             and 'optimizer' in ckpt):
                raise ToolError(f'checkpoint {resume_from} holds no training state to resume '
                                '(meta.epoch, meta.iter, optimizer): weights only? To start '
                                f'from its weights: --cfg-options load_from={resume_from}')
            if ckpt:
                check_optimizer_match(model, cfg, ckpt, resume_from)
            del ckpt
        del model
        add_random_state_hook(cfg)

        from mmdyn.utils.dist import close_distributed, setup_cpu_distributed
        setup_cpu_distributed(cfg, args.launcher)

        from mmengine.registry import RUNNERS
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        try:
            runner.train()
        except ValueError as e:  # torch's optimizer refusing the resumed optimizer state
            if resume_from is None or 'parameter group' not in str(e):
                raise
            raise ToolError(f'checkpoint {resume_from}: its optimizer state does not fit the '
                            f'optimizer of the config ({str(e).strip()}); was it written by '
                            'another config?') from e
        del runner  # see close_distributed: the runner must go before the group
        close_distributed()


if __name__ == '__main__':
    main()
