"""Draw the token decisions of dynamic modules over the image.

Each decision point (a key of a dynamic module's ``last_maps``: a stage, a gate) becomes one
panel: the image with the point's token map drawn where its tokens sit (cell ``j`` over input
pixels ``[j * stride, (j + 1) * stride)``, the module's
:meth:`~mmdyn.models.utils.dynamic.DynamicModuleMixin.decision_map_style`) and cropped to the
image. A 0/1 map (kept / fine tokens) tints the tokens that are 1 with ``mask_color`` and
leaves the others as they are; a map of choices (a patch side, a confidence level, an exit)
tints each value with its own colour of ``palette``, whatever other values the image has.
The panels are laid out in a grid, ``ncols`` per row.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.visualization import Visualizer

from mmdyn.registry import VISUALIZERS

# Distinct colours (RGB) for integer choices 0, 1, 2, ...
DEFAULT_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                   (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                   (188, 189, 34), (23, 190, 207))


def _ceil_or_floor_grid(size: int, cells: int, stride: int) -> bool:
    return cells in (-(-size // stride), size // stride)


def infer_map_stride(map_shape: Sequence[int], input_shape: Sequence[int]) -> Optional[int]:
    """The stride of a ``[h, w]`` map of an ``H x W`` input when none is declared: ``None``
    (stretch over the input) for a one-cell map or one that divides the input evenly, else the
    power of two whose ceil or floor grid of the input is ``h x w`` (the strides of every
    PVT / ViT-16 host here), else ``None``."""
    (h, w), (H, W) = (int(v) for v in map_shape), (int(v) for v in input_shape)
    if (h, w) == (1, 1) or (H % h == 0 and W % w == 0 and H // h == W // w):
        return None
    s = 1
    while s <= 2 * max(H, W):
        if _ceil_or_floor_grid(H, h, s) and _ceil_or_floor_grid(W, w, s):
            return s
        s *= 2
    return None


def map_to_image(token_map, input_shape: Tuple[int, int],
                 img_shape: Optional[Tuple[int, int]] = None,
                 stride: Optional[int] = None) -> np.ndarray:
    """A ``[h, w]`` token map at the pixels of the network input ``input_shape`` (``H, W``,
    padded), cropped to ``img_shape`` (the image inside the padding, top-left). With a
    ``stride`` cell ``(i, j)`` covers pixels ``[i * stride, (i + 1) * stride)`` x
    ``[j * stride, (j + 1) * stride)`` (the grid is cropped where it runs past the input, and
    input pixels no cell covers are ``-1``: drawn untinted); without one
    (:func:`infer_map_stride` finds none) the map is stretched over the input (nearest)."""
    m = torch.as_tensor(token_map).detach().float().cpu()
    if m.dim() != 2:
        raise ValueError(f'a token map must be 2-D [h, w], got shape {tuple(m.shape)}')
    size = tuple(int(s) for s in input_shape)
    if stride is None:
        stride = infer_map_stride(m.shape, size)
    if stride is None:
        m = F.interpolate(m[None, None], size=size, mode='nearest')[0, 0]
    else:
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f'stride must be an int >= 1, got {stride!r}')
        m = m.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:size[0], :size[1]]
        m = F.pad(m, (0, size[1] - m.shape[1], 0, size[0] - m.shape[0]), value=-1.0)
    if img_shape is not None:
        m = m[:int(img_shape[0]), :int(img_shape[1])]
    return m.round().long().numpy()


def collect_decision_maps(model, styles: bool = False) -> Dict[str, torch.Tensor]:
    """``<module name>/<key>`` -> ``Tensor[B, h, w]``: the ``last_maps`` of every dynamic module
    of ``model`` (its last call). With ``styles`` the values are ``(map, stride, binary)``, the
    module's ``decision_map_style`` (where the cells sit on the input, and the kind of map)."""
    from mmdyn.models.utils.dynamic import find_dynamic_modules
    dyn = {id(m) for m in find_dynamic_modules(model)}
    out = {}
    for name, m in model.named_modules():
        if id(m) in dyn:
            style = getattr(m, 'decision_map_style', lambda key: (None, None))
            for k, v in (getattr(m, 'last_maps', None) or {}).items():
                out[f'{name}/{k}' if name else k] = (v, *style(k)) if styles else v
    return out


def image_maps(recorded: Dict, index: int, input_shape: Tuple[int, int],
               img_shape: Tuple[int, int]) -> Tuple[Dict[str, np.ndarray], Dict[str, bool]]:
    """``(maps, binary)`` of image ``index`` of a batch for
    :meth:`DynamicVisualizer.add_datasample`: each ``(map, stride, binary)`` of ``recorded``
    (:func:`collect_decision_maps` with ``styles``) placed on the network input
    ``input_shape`` and cropped to the image ``img_shape`` (:func:`map_to_image`), and each
    map's kind."""
    maps = {k: map_to_image(v[index], input_shape, img_shape, stride)
            for k, (v, stride, _) in recorded.items()}
    return maps, {k: b for k, (_, _, b) in recorded.items()}


def _on_every_rank(method):
    """``method`` without mmengine's ``master_only`` wrapper (the function it wraps)."""
    return getattr(method, '__wrapped__', method)


@VISUALIZERS.register_module()
class DynamicVisualizer(Visualizer):
    """Visualizer of token decisions (``last_maps`` of dynamic modules).

    Args:
        mask_color (tuple): RGB tint of the 1s of a 0/1 map. Defaults to crimson.
        palette (sequence of tuples): RGB tints of the values of an integer map.
        alpha (float): tint opacity. Defaults to 0.5.
        ncols (int): panels per row. Defaults to 4.
        draw_titles (bool): write each decision point's name on its panel. Defaults to True.
        Other arguments go to :class:`mmengine.visualization.Visualizer`.
    """

    # Drawing is local to each process: mmengine's Visualizer draws on the main process only
    # (its drawing methods return None elsewhere), but in a distributed test every rank draws
    # the decision maps of its own images (:class:`mmdyn.engine.hooks.DecisionMapHook`).
    # Showing and the visual backends stay on the main process.
    set_image = _on_every_rank(Visualizer.set_image)
    get_image = _on_every_rank(Visualizer.get_image)
    draw_binary_masks = _on_every_rank(Visualizer.draw_binary_masks)
    draw_texts = _on_every_rank(Visualizer.draw_texts)

    def __init__(self, name: str = 'dynamic_visualizer', image: Optional[np.ndarray] = None,
                 vis_backends=None, save_dir: Optional[str] = None,
                 mask_color: Tuple[int, int, int] = (220, 20, 60),
                 palette: Sequence[Tuple[int, int, int]] = DEFAULT_PALETTE,
                 alpha: float = 0.5, ncols: int = 4, draw_titles: bool = True,
                 **kwargs) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir,
                         **kwargs)
        self.mask_color = tuple(int(c) for c in mask_color)
        self.palette = [tuple(int(c) for c in p) for p in palette]
        self.alpha = float(alpha)
        self.ncols = int(ncols)
        self.draw_titles = draw_titles

    def draw_decision_map(self, image: np.ndarray, dmap: np.ndarray,
                          title: Optional[str] = None,
                          binary: Optional[bool] = None) -> np.ndarray:
        """One panel: ``image`` (RGB, ``H x W x 3``) tinted by ``dmap`` (``H x W`` integers;
        negative: no token there, untinted). ``binary``: a 0/1 map (its 1s in
        ``mask_color``) or a map of choices (each value its palette colour); ``None`` (a map
        of unknown kind): a 0/1 map when its values are all 0 or 1."""
        if dmap.shape != image.shape[:2]:
            raise ValueError(f'map shape {dmap.shape} differs from image shape {image.shape[:2]}')
        self.set_image(image)
        values = [v for v in np.unique(dmap).tolist() if v >= 0]
        if binary is None:
            binary = set(values) <= {0, 1}
        if binary:
            masks, colors = [dmap == 1], [self.mask_color]
        else:
            masks = [dmap == v for v in values]
            colors = [self.palette[int(v) % len(self.palette)] for v in values]
        masks_colors = [(m, c) for m, c in zip(masks, colors) if m.any()]
        if masks_colors:
            self.draw_binary_masks(np.stack([m for m, _ in masks_colors]),
                                   colors=[c for _, c in masks_colors], alphas=self.alpha)
        if self.draw_titles and title:
            size = max(6, min(12, image.shape[0] // 12))
            self.draw_texts(title, np.array([2, 2]), colors='white', font_sizes=size,
                            vertical_alignments='top',
                            bboxes=dict(facecolor='black', alpha=0.6, pad=0.5,
                                        edgecolor='none'))
        return self.get_image()

    def draw_decision_maps(self, image: np.ndarray, maps: Dict[str, np.ndarray],
                           binary: Optional[Dict[str, Optional[bool]]] = None) -> np.ndarray:
        """All panels of one image in a grid (``ncols`` per row, black where no panel);
        ``binary`` maps a key to its kind (:meth:`draw_decision_map`)."""
        if not maps:
            raise ValueError('no decision maps to draw (did the model run a dynamic module?)')
        binary = binary or {}
        panels = [self.draw_decision_map(image, m, k, binary.get(k)) for k, m in maps.items()]
        h, w = panels[0].shape[:2]
        ncols = max(1, min(self.ncols, len(panels)))
        nrows = math.ceil(len(panels) / ncols)
        grid = np.zeros((nrows * h, ncols * w, 3), dtype=np.uint8)
        for i, p in enumerate(panels):
            r, c = divmod(i, ncols)
            grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = p
        return grid

    def add_datasample(self, name: str, image: np.ndarray, data_sample=None,
                       draw_gt: bool = False, draw_pred: bool = True, show: bool = False,
                       wait_time: float = 0, out_file: Optional[str] = None, step: int = 0,
                       maps: Optional[Dict[str, np.ndarray]] = None,
                       binary: Optional[Dict[str, Optional[bool]]] = None) -> np.ndarray:
        """Draw the decision maps of one image (``H x W`` integer arrays, see
        :func:`map_to_image`; ``binary`` their kinds, see :meth:`draw_decision_maps`); show
        it, write it to ``out_file``, or else pass it to the visual backends. ``maps`` may also
        come from ``data_sample.dynamic_maps``; ``draw_gt`` and ``draw_pred`` are accepted for
        the signature of :class:`Visualizer` and not used."""
        if maps is None and data_sample is not None:
            maps = getattr(data_sample, 'dynamic_maps', None)
        if not maps:
            raise ValueError('DynamicVisualizer.add_datasample needs decision maps (maps=...)')
        drawn = self.draw_decision_maps(image, maps, binary)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            import mmcv
            mmcv.imwrite(drawn[..., ::-1], out_file)
        else:
            self.add_image(name, drawn, step)
        return drawn
