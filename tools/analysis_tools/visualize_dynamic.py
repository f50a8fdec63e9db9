"""Draw the token decisions of a dynamic model over images.

Usage::

    python tools/analysis_tools/visualize_dynamic.py CONFIG [CHECKPOINT] IMAGE [IMAGE ...] \\
        --out DIR [--device cpu] [--cfg-options key=value ...] [--override key=value ...]

The model is built from CONFIG (its ``custom_imports`` are honoured and its ``default_scope`` is
used), loaded from CHECKPOINT when one is given (a path ending in .pth / .pt / .ckpt, or passed
as ``--checkpoint``) and run in eval mode on each image, after the config's test pipeline
(``test_dataloader.dataset.pipeline``, or ``test_pipeline``; annotation loading is dropped).
Without a pipeline in the config the image is only loaded (and resized with ``--img-scale``).
Sliding-window inference is switched to whole-image inference so that each decision map covers
the whole image. For every image ``DIR/<name>.png`` holds one panel per decision point: the
``last_maps`` of every dynamic module, named ``<module>/<key>``. ``--override`` draws the
decisions forced by a decision override instead of the model's own
(:func:`mmdyn.models.utils.override_decisions`, e.g. ``--override fine_ratio=0.5`` for MSViT;
the keys of each method are listed in :mod:`mmdyn.models.utils.dynamic`).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

CKPT_EXTS = ('.pth', '.pt', '.ckpt', '.bin', '.safetensors')


def parse_args(argv: Optional[Sequence[str]] = None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Draw the token decisions of a dynamic model over images')
    parser.add_argument('config', help='config file')
    parser.add_argument('inputs', nargs='+', metavar='[CHECKPOINT] IMAGE',
                        help='optional checkpoint (.pth/.pt/.ckpt), then one or more images')
    parser.add_argument('--out', required=True, help='directory for the PNGs')
    parser.add_argument('--checkpoint', default=None, help='checkpoint (alternative form)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:0 (default: cuda if '
                        'available, else cpu)')
    parser.add_argument('--img-scale', type=int, nargs=2, default=None, metavar=('W', 'H'),
                        help='resize to this size when the config has no test pipeline')
    parser.add_argument('--alpha', type=float, default=0.5, help='tint opacity')
    parser.add_argument('--ncols', type=int, default=4, help='panels per row')
    parser.add_argument('--no-titles', action='store_true', help='do not write panel names')
    parser.add_argument('--channel-order', choices=['bgr', 'rgb'], default='bgr',
                        help='channel order of the pipeline output image (mmcv loads BGR)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, as in tools/train.py')
    parser.add_argument('--override', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='draw the decisions of this decision override (see above)')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import arg_error
    prog = 'visualize_dynamic.py'
    if not 0.0 <= args.alpha <= 1.0:
        arg_error(prog, f'--alpha must be in [0, 1], got {args.alpha}')
    if args.ncols < 1:
        arg_error(prog, f'--ncols must be at least 1, got {args.ncols}')
    if args.img_scale is not None and min(args.img_scale) < 1:
        arg_error(prog, f'--img-scale must be positive, got {args.img_scale}')
    from mmdyn.utils.cli import check_output_path
    check_output_path(prog, '--out', args.out, 'dir')
    inputs = list(args.inputs)
    if args.checkpoint is None and inputs and inputs[0].lower().endswith(CKPT_EXTS):
        args.checkpoint = inputs.pop(0)
    if not inputs:
        parser.error('no image given')
    args.images = inputs
    return args


def test_pipeline_cfg(cfg) -> Optional[List[dict]]:
    """The config's test pipeline without annotation loading, or None."""
    pipeline = None
    for loader in ('test_dataloader', 'val_dataloader'):
        ds = cfg.get(loader, None)
        ds = ds.get('dataset', None) if ds else None
        while ds is not None and 'pipeline' not in ds and 'dataset' in ds:  # wrappers
            ds = ds['dataset']
        if ds is not None and ds.get('pipeline'):
            pipeline = ds['pipeline']
            break
    if pipeline is None:
        pipeline = cfg.get('test_pipeline', None)
    if not pipeline:
        return None
    return [t for t in pipeline if 'LoadAnnotations' not in str(t.get('type', ''))]


def build_model(cfg, checkpoint: Optional[str], device: str):
    from mmengine.registry import MODELS
    model_cfg = cfg.model
    test_cfg = model_cfg.get('test_cfg', None)
    if isinstance(test_cfg, dict) and test_cfg.get('mode') == 'slide':
        print('visualize_dynamic: slide inference switched to whole-image inference',
              file=sys.stderr)
        test_cfg['mode'] = 'whole'
    if 'pretrained' in model_cfg:
        model_cfg.pretrained = None
    model = MODELS.build(model_cfg)
    if checkpoint:
        from mmdyn.utils.cli import load_checked_weights
        load_checked_weights(model, checkpoint)  # another model's weights: one line
    return model.to(device).eval()


def dynamic_maps(model, styles: bool = False) -> Dict[str, torch.Tensor]:
    """:func:`mmdyn.visualization.collect_decision_maps` (kept here for the tool's users)."""
    from mmdyn.visualization import collect_decision_maps
    return collect_decision_maps(model, styles)


def prepare(path: str, pipeline, img_scale=None, channel_order='bgr'):
    """``(data, image_rgb)``: the model's input dict for one image and the image to draw on."""
    import mmcv
    from mmengine.structures import BaseDataElement
    check_image(path)
    if pipeline is not None:
        data = pipeline(dict(img_path=path))
        inputs = data['inputs']
        samples = data.get('data_samples', None)
    else:
        img = mmcv.imread(path)  # BGR, as mmcv's LoadImageFromFile
        ori_shape = img.shape[:2]
        if img_scale is not None:
            img = mmcv.imresize(img, tuple(img_scale))
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        samples = BaseDataElement(metainfo=dict(img_path=path, ori_shape=ori_shape,
                                                img_shape=img.shape[:2]))
    image = inputs.detach().cpu().numpy().transpose(1, 2, 0)
    if image.shape[2] == 3 and channel_order == 'bgr':
        image = image[..., ::-1]
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = np.clip(image, 0, 255).astype(np.uint8)
    data = dict(inputs=[inputs], data_samples=[samples] if samples is not None else None)
    return data, np.ascontiguousarray(image)


def visualize(model, image_paths: Sequence[str], out_dir: str, pipeline=None, visualizer=None,
              img_scale=None, channel_order='bgr') -> List[str]:
    """Run ``model`` on each image and save its decision maps; returns the PNG paths."""
    from mmdyn.visualization import DynamicVisualizer
    from mmdyn.visualization import image_maps
    visualizer = visualizer or DynamicVisualizer(name=f'visualize_dynamic_{id(model)}')
    os.makedirs(out_dir, exist_ok=True)
    written, used = [], set()
    model.eval()
    for path in image_paths:
        data, image = prepare(path, pipeline, img_scale, channel_order)
        with torch.no_grad():
            data = model.data_preprocessor(data, False)
            if isinstance(data, dict):
                model(**data, mode='predict')
            else:
                model(*data, mode='predict')
        input_shape = tuple(data['inputs'].shape[-2:])
        recorded = dynamic_maps(model, styles=True)
        maps, binary = image_maps(recorded, 0, input_shape, image.shape[:2])
        if not maps:
            from mmdyn.utils.cli import ToolError
            raise ToolError('the model recorded no decision maps (it has no dynamic module, '
                            'or none of them recorded last_maps): is it a static config?')
        stem = osp.splitext(osp.basename(path))[0]
        name, i = stem, 1
        while name in used:
            name, i = f'{stem}_{i}', i + 1
        used.add(name)
        out_file = osp.join(out_dir, f'{name}.png')
        visualizer.add_datasample(name, image, maps=maps, out_file=out_file,
                                  binary=binary)
        written.append(out_file)
    return written


def check_image(path: str) -> None:
    """One line (a :class:`~mmdyn.utils.cli.ToolError`) for a missing or unreadable image."""
    import mmcv

    from mmdyn.utils.cli import ToolError
    if not osp.isfile(path):
        raise ToolError(f'image {path} does not exist')
    try:
        img = mmcv.imread(path)
    except Exception as e:  # noqa: BLE001
        raise ToolError(f'image {path} is not a readable image ({type(e).__name__})') from None
    if img is None or img.size == 0:
        raise ToolError(f'image {path} is not a readable image')


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('visualize_dynamic.py'):
        return _main(args)


def _main(args) -> List[str]:
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    import mmdyn  # noqa: F401  (registries, checkpoint loading fixes)
    from mmdyn.models.utils.dynamic import (decisions_overridden, find_dynamic_modules,
                                            takes_decision_override)
    from mmdyn.utils.cli import ToolError, check_checkpoint, check_device, load_config
    from mmdyn.visualization import DynamicVisualizer
    cfg = load_config(args.config, args.cfg_options)  # runs custom_imports
    for path in args.images:
        check_image(path)
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
    init_default_scope(cfg.get('default_scope', 'mmdyn'))
    check_device(args.device)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_model(cfg, args.checkpoint, device)
    if not find_dynamic_modules(model):
        raise ToolError(f'the model of {args.config} has no dynamic module: there are no token '
                        'decisions to draw (a static config?)')
    if args.override and not takes_decision_override(model):
        raise ToolError(f'--override: the model of {args.config} takes no decision override')
    pipeline_cfg = test_pipeline_cfg(cfg)
    pipeline = None
    if pipeline_cfg:
        import mmcv.transforms  # noqa: F401  (LoadImageFromFile, Resize, ... in the root)
        pipeline = Compose(pipeline_cfg)
    vis = DynamicVisualizer(name=f'visualize_dynamic_{os.getpid()}', alpha=args.alpha,
                            ncols=args.ncols, draw_titles=not args.no_titles)
    with decisions_overridden(model, args.override):
        written = visualize(model, args.images, args.out, pipeline, vis, args.img_scale,
                            args.channel_order)
    for f in written:
        print(f)
    return written


if __name__ == '__main__':
    main()
