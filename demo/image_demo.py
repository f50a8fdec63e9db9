"""Run an mmdyn model on one image, draw its prediction and, optionally, its token decisions.

    python demo/image_demo.py IMAGE CONFIG CHECKPOINT --out-file OUT.png \\
        [--show-dynamic] [--device cpu] [--score-thr 0.3] [--opacity 0.5] \\
        [--cfg-options KEY=VALUE ...]

The codebase (mmseg, mmdet or mmpretrain) is read from the config (``default_scope``, else the
model type). The model is built with that codebase's own builder (``mmseg.apis.init_model``,
``mmdet.apis.init_detector``, ``mmpretrain.apis.get_model``) with mmdyn's per-image records
switched on (:func:`mmdyn.apis.init_model`), run with the codebase's inference function, and its
prediction drawn on the image by the codebase's visualizer (``SegLocalVisualizer``,
``DetLocalVisualizer``, ``UniversalVisualizer``). The realised GFLOPs of the image (one FLOP is
one multiply-add), the static GFLOPs and the recorded statistics (token ratios) are printed.

With ``--show-dynamic`` the token decisions (``last_maps`` of every dynamic module, one panel per
decision point, drawn by :class:`mmdyn.visualization.DynamicVisualizer` over the image as the
network saw it after the test pipeline) are put beside the prediction: a grid of ``--ncols``
panels a row, as high as the prediction.
Sliding-window segmentation is then switched to whole-image inference so that each map covers
the whole image: the prediction drawn and the GFLOPs printed are then those of whole-image
inference (a note on stderr says so).
"""
import argparse
import importlib.util
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


#: what the drawing can be written as (OpenCV's encoders)
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: Optional[Sequence[str]] = None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Draw the prediction (and the token decisions) of '
                                'an mmdyn model on one image')
    p.add_argument('img', help='image file')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out-file', required=True, help='where to write the drawing (PNG)')
    p.add_argument('--show-dynamic', action='store_true',
                   help='put the token decisions beside the prediction')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0 (default cpu)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detection: draw boxes above this score (default 0.3)')
    p.add_argument('--opacity', type=float, default=0.5,
                   help='segmentation masks / decision tints opacity (default 0.5)')
    p.add_argument('--ncols', type=int, default=4,
                   help='--show-dynamic: decision panels per row (default 4)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config settings, as in tools/train.py')
    args = p.parse_args(argv)
    from mmdyn.utils.cli import arg_error
    if not 0.0 <= args.opacity <= 1.0:
        arg_error('image_demo.py', f'--opacity must be in [0, 1], got {args.opacity}')
    if not 0.0 <= args.score_thr <= 1.0:
        arg_error('image_demo.py', f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.ncols < 1:
        arg_error('image_demo.py', f'--ncols must be at least 1, got {args.ncols}')
    from mmdyn.utils.cli import check_output_path
    check_output_path('image_demo.py', '--out-file', args.out_file, 'file', IMAGE_EXTS)
    return args


def _visualize_dynamic_tool():
    """tools/analysis_tools/visualize_dynamic.py as a module (its drawing helpers)."""
    name = 'mmdyn_tools_visualize_dynamic'
    if name not in sys.modules:
        path = osp.join(REPO, 'tools', 'analysis_tools', 'visualize_dynamic.py')
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def draw_prediction(codebase: str, model, image_rgb: np.ndarray, sample, score_thr: float,
                    opacity: float) -> np.ndarray:
    """The prediction drawn on ``image_rgb`` by the codebase's visualizer (RGB array)."""
    name = f'image_demo_{os.getpid()}_{id(model)}'
    if codebase == 'mmseg':
        from mmseg.visualization import SegLocalVisualizer
        vis = SegLocalVisualizer(name=name, alpha=opacity)
        vis.dataset_meta = dict(model.dataset_meta)
        vis.add_datasample('pred', image_rgb, sample, draw_gt=False, draw_pred=True)
        return vis.get_image()
    if codebase == 'mmdet':
        from mmdet.visualization import DetLocalVisualizer
        vis = DetLocalVisualizer(name=name, alpha=opacity)
        vis.dataset_meta = dict(model.dataset_meta)
        vis.add_datasample('pred', image_rgb, sample, draw_gt=False, draw_pred=True,
                           pred_score_thr=score_thr)
        return vis.get_image()
    from mmpretrain.visualization import UniversalVisualizer
    vis = UniversalVisualizer(name=name)
    classes = (getattr(model, '_dataset_meta', None) or {}).get('classes', None)
    return vis.visualize_cls(image_rgb, sample, classes=classes, draw_gt=False)


def draw_decisions(model, cfg, img_path: str, input_shape, height: int, opacity: float,
                   ncols: int = 4) -> np.ndarray:
    """The decision panels of the last forward in a grid of ``ncols`` columns whose height is
    ``height`` rows (black below the last row of panels when they do not fill it). Each panel is
    the image as the network saw it (after the test pipeline), scaled to the grid's row height,
    tinted by one decision map (RGB)."""
    import math

    import mmcv
    from mmengine.dataset import Compose

    from mmdyn.visualization import DynamicVisualizer, image_maps
    tool = _visualize_dynamic_tool()
    maps = tool.dynamic_maps(model, styles=True)
    if not maps:
        from mmdyn.utils.cli import ToolError
        raise ToolError('the model recorded no token decisions (last_maps is empty for every '
                        'dynamic module): --show-dynamic needs a dynamic config')
    pipeline_cfg = tool.test_pipeline_cfg(cfg)
    import mmcv.transforms  # noqa: F401  (LoadImageFromFile & co. in the root registry)
    _, net_image = tool.prepare(img_path, Compose(pipeline_cfg) if pipeline_cfg else None)
    h, w = net_image.shape[:2]
    ncols = max(1, min(ncols, len(maps)))
    panel_h = max(1, height // math.ceil(len(maps) / ncols))
    size = (max(1, int(round(w * panel_h / h))), panel_h)  # (W, H) of one panel
    image = mmcv.imresize(net_image, size, interpolation='bilinear')
    placed, binary = image_maps(maps, 0, input_shape, (h, w))
    panels = {k: mmcv.imresize(m.astype(np.int32), size, interpolation='nearest')
              for k, m in placed.items()}
    vis = DynamicVisualizer(name=f'image_demo_dyn_{os.getpid()}_{id(model)}', alpha=opacity,
                            ncols=ncols)
    grid = vis.draw_decision_maps(image, panels, binary)
    out = np.zeros((height, grid.shape[1], 3), dtype=np.uint8)
    out[:grid.shape[0]] = grid
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('image_demo.py'):
        return _main(args)


def _main(args) -> dict:
    import mmcv

    import mmdyn  # noqa: F401
    from mmdyn.apis import codebase_of, dynamic_records, inference_model, init_model

    from mmdyn.utils.cli import check_checkpoint, check_device, load_config
    check_device(args.device)
    tool = _visualize_dynamic_tool()
    tool.check_image(args.img)  # missing or unreadable: one line
    cfg = load_config(args.config, args.cfg_options)
    ckpt = check_checkpoint(args.checkpoint)
    codebase = codebase_of(cfg)
    from mmengine.registry import init_default_scope
    init_default_scope(codebase)  # the test pipeline's transforms are the codebase's
    if args.show_dynamic:
        test_cfg = cfg.model.get('test_cfg', None)
        if isinstance(test_cfg, dict) and test_cfg.get('mode') == 'slide':
            print('image_demo.py: slide inference switched to whole-image inference',
                  file=sys.stderr)
            test_cfg['mode'] = 'whole'
    if ckpt:  # the codebases' builders only warn (pages of keys) about another model's weights
        from mmdyn.utils.cli import build_model, check_weights_match
        check_weights_match(build_model(cfg), ckpt, args.checkpoint)
    del ckpt
    model = init_model(cfg, args.checkpoint, device=args.device)

    shapes = []  # the network input (padded batch) of the forward
    handle = model.data_preprocessor.register_forward_hook(
        lambda m, a, out: shapes.append(tuple(out['inputs'].shape[-2:])))
    try:
        sample = inference_model(model, args.img, codebase=codebase)
    finally:
        handle.remove()

    image_rgb = mmcv.imread(args.img, channel_order='rgb')
    drawn = draw_prediction(codebase, model, image_rgb, sample, args.score_thr, args.opacity)
    if args.show_dynamic:
        panels = draw_decisions(model, cfg, args.img, shapes[-1], drawn.shape[0], args.opacity,
                                args.ncols)
        drawn = np.concatenate([drawn, panels], axis=1)
    os.makedirs(osp.dirname(osp.abspath(args.out_file)), exist_ok=True)
    if not mmcv.imwrite(drawn[..., ::-1], args.out_file):
        from mmdyn.utils.cli import ToolError
        raise ToolError(f'cannot write {args.out_file}')

    rec = dynamic_records(sample)
    if rec is None:
        print('realised GFLOPs: n/a (the model has no dynamic module)')
    else:
        line = f"realised GFLOPs: {rec['gflops']:.6g}"
        if rec.get('static_flops'):
            line += f" (static {rec['static_flops'] / 1e9:.6g})"
        print(line)
        for k, v in sorted(rec['stats'].items()):
            print(f'  {k}: {v:.4f}')
    print(f'wrote {args.out_file}')
    return dict(codebase=codebase, sample=sample, image=drawn, records=rec, model=model)


if __name__ == '__main__':
    main()
