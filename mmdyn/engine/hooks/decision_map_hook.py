"""Draw every test image's token decisions while a model is tested.

``tools/test.py CONFIG CKPT --show-dynamic DIR`` adds this hook; in a config::

    custom_hooks = [dict(type='mmdyn.DecisionMapHook', out_dir='work_dirs/decisions')]

After each test (or, with ``on_val=True``, validation) iteration, the ``last_maps`` of every
dynamic module (:func:`mmdyn.visualization.collect_decision_maps`) are drawn over each image of
the batch by :class:`mmdyn.visualization.DynamicVisualizer`, one panel per decision point, as
``tools/analysis_tools/visualize_dynamic.py`` draws them: ``DIR/<image name>.png``. The image
drawn on is the test pipeline's output (resized, not yet normalised or padded); each map is
placed on the padded network input (the sample's ``batch_input_shape`` or ``pad_shape``) and
cropped to the image.

A forward that calls a dynamic module more than once (sliding-window inference, test-time
augmentation) keeps only the last call's maps, which cover one window or one view: such a
batch is not drawn, and the hook warns once (``--cfg-options model.test_cfg.mode=whole`` draws
mmseg's models whole).
"""
import os
import os.path as osp
import warnings
from typing import Dict, Optional

import numpy as np
from mmengine.hooks import Hook

from mmdyn.registry import HOOKS


@HOOKS.register_module()
class DecisionMapHook(Hook):
    """Write the decision maps of every test image as PNGs.

    Args:
        out_dir (str): directory for the PNGs (created).
        interval (int): draw every ``interval``-th batch. Defaults to 1.
        on_val (bool): draw the validation batches too. Defaults to False.
        alpha (float): tint opacity. Defaults to 0.5.
        ncols (int): panels per row. Defaults to 4.
        channel_order (str): ``'bgr'`` (what mmcv's ``LoadImageFromFile`` gives, the default)
            or ``'rgb'``: the channel order of the batch's images before the data
            preprocessor.
    """

    priority = 'LOW'

    def __init__(self, out_dir: str, interval: int = 1, on_val: bool = False,
                 alpha: float = 0.5, ncols: int = 4, channel_order: str = 'bgr') -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f'DecisionMapHook: interval must be a positive int, got '
                             f'{interval!r}')
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"DecisionMapHook: channel_order must be 'bgr' or 'rgb', got "
                             f'{channel_order!r}')
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f'DecisionMapHook: alpha must be in [0, 1], got {alpha!r}')
        self.out_dir = out_dir
        self.interval = interval
        self.on_val = on_val
        self.channel_order = channel_order
        self._vis_args = dict(alpha=float(alpha), ncols=int(ncols))
        self._visualizer = None
        self._handles = []
        self._calls: Dict[int, int] = {}
        self._names = set()
        self._warned = False
        self.written = []

    # -- counting the calls of the dynamic modules in one forward --------------------------
    def _install(self, runner) -> None:
        from mmdyn.models.utils.dynamic import find_dynamic_modules, unwrap_model
        self._remove()
        model = unwrap_model(runner.model)
        modules = find_dynamic_modules(model)
        if not modules:
            raise RuntimeError('DecisionMapHook: the model has no dynamic module, so there are '
                               'no decisions to draw (a static config?)')
        for m in modules:
            self._handles.append(m.register_forward_hook(self._count))
        if self._visualizer is None:
            from mmdyn.visualization import DynamicVisualizer
            self._visualizer = DynamicVisualizer(
                name=f'decision_map_hook_{os.getpid()}_{id(self)}', **self._vis_args)
        os.makedirs(self.out_dir, exist_ok=True)

    def _count(self, module, args, output) -> None:
        self._calls[id(module)] = self._calls.get(id(module), 0) + 1

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def before_test(self, runner) -> None:
        self._install(runner)

    def before_val(self, runner) -> None:
        if self.on_val:
            self._install(runner)

    def after_test(self, runner) -> None:
        self._remove()

    def after_val(self, runner) -> None:
        if self.on_val:
            self._remove()

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._calls = {}

    def before_val_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._calls = {}

    # -- drawing ----------------------------------------------------------------------------
    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if batch_idx % self.interval == 0:
            self._draw(runner, data_batch, outputs)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.on_val and batch_idx % self.interval == 0:
            self._draw(runner, data_batch, outputs)

    def _warn_once(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f'DecisionMapHook: {msg}')

    def _draw(self, runner, data_batch, outputs) -> None:
        from mmdyn.models.utils.dynamic import unwrap_model
        from mmdyn.visualization import collect_decision_maps, image_maps
        if self._calls and max(self._calls.values()) > 1:
            self._warn_once(f'a dynamic module ran {max(self._calls.values())} times in one '
                            'forward (sliding windows or test-time augmentation): its maps '
                            'cover the last window or view only, so nothing is drawn. '
                            "mmseg: --cfg-options model.test_cfg.mode='whole'")
            return
        recorded = collect_decision_maps(unwrap_model(runner.model), styles=True)
        images = data_batch.get('inputs') if isinstance(data_batch, dict) else None
        samples = list(outputs) if isinstance(outputs, (list, tuple)) else []
        if not recorded or images is None or not samples:
            return
        for key, (m, _, _) in recorded.items():
            if m.shape[0] != len(samples):
                self._warn_once(f'{key} holds {m.shape[0]} maps for a batch of {len(samples)} '
                                'images: nothing is drawn')
                return
        for i, sample in enumerate(samples):
            image = self._image(images[i])
            meta = getattr(sample, 'metainfo', {}) or {}
            input_shape = meta.get('batch_input_shape') or meta.get('pad_shape') or \
                image.shape[:2]
            input_shape = tuple(int(s) for s in tuple(input_shape)[:2])
            maps, binary = image_maps(recorded, i, input_shape, image.shape[:2])
            out_file = osp.join(self.out_dir, self._name(meta, len(self.written)) + '.png')
            self._visualizer.add_datasample(osp.basename(out_file), image, maps=maps,
                                            out_file=out_file, binary=binary)
            self.written.append(out_file)

    def _image(self, img) -> np.ndarray:
        """``H x W x 3`` uint8 RGB of a ``C x H x W`` batch image."""
        a = img.detach().cpu().numpy() if hasattr(img, 'detach') else np.asarray(img)
        a = a.transpose(1, 2, 0)
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        elif self.channel_order == 'bgr':
            a = a[..., ::-1]
        return np.ascontiguousarray(np.clip(a, 0, 255).astype(np.uint8))

    def _name(self, meta: dict, index: int) -> str:
        path: Optional[str] = meta.get('img_path')
        stem = osp.splitext(osp.basename(path))[0] if path else f'{index:06d}'
        name, k = stem, 1
        while name in self._names:
            name, k = f'{stem}_{k}', k + 1
        self._names.add(name)
        return name
