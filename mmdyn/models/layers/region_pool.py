"""Region geometry of a token map: S x S regions, their pooling and the un-pooling index.

A region is an ``S x S`` block of tokens (pixels); an ``H x W`` map has a
``ceil(H / S) x ceil(W / S)`` region grid. When ``H`` or ``W`` is not a multiple of ``S`` the
last row/column of regions is cut at the border: it has fewer real tokens (:func:`region_extents`)
and pools over those only. ``size=None`` is one region covering the whole map (layer-wise
routing). :func:`region_ids` maps every token to its region (row-major): gathering region values
with it un-pools them, and ``region_ids(patch_grid, S // p)`` gives the region of every
``p x p`` patch when ``p`` divides ``S``.

Pooling: :func:`region_pool` for ``[B, C, H, W]`` maps, :func:`region_pool_tokens` for
``[B, H*W, C]`` tokens (channels last, the layout of transformer tokens).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .shape_constants import shape_constant


def _check_size(size: Optional[int], allow_none: bool = True) -> Optional[int]:
    if size is None and allow_none:
        return size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'region size S must be an int >= 1, got {size!r}')
    return size


def region_grid(hw_shape: Sequence[int], size: Optional[int]) -> Tuple[int, int]:
    """Region grid ``(ceil(H / S), ceil(W / S))`` of an ``H x W`` map (``(1, 1)`` for
    ``size=None``)."""
    if _check_size(size) is None:
        return 1, 1
    h, w = hw_shape
    return -(-h // size), -(-w // size)


@shape_constant
def region_extents(hw_shape: Sequence[int], size: Optional[int],
                   device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Real rows of every region row and real columns of every region column,
    ``(Long[gh], Long[gw])`` (``S`` except at the bottom/right border). Cached per shape and
    device (:mod:`.shape_constants`: do not modify in place)."""
    h, w = (int(v) for v in hw_shape)
    if _check_size(size) is None:
        return torch.tensor([h], device=device), torch.tensor([w], device=device)
    gh, gw = region_grid(hw_shape, size)
    rows = (h - torch.arange(gh, device=device) * size).clamp(max=size)
    cols = (w - torch.arange(gw, device=device) * size).clamp(max=size)
    return rows, cols


@shape_constant
def region_ids(hw_shape: Sequence[int], size: Optional[int], device=None) -> torch.Tensor:
    """Region index (row-major on the region grid) of every token, ``Long[H * W]``.

    Token ``i`` (row-major) lies in region ``region_ids(...)[i]``: ``r[:, ids]`` un-pools
    region values ``r[:, gh * gw]`` to the tokens (the map from a fine token to its coarse
    parent). Cached per shape and device (:mod:`.shape_constants`: do not modify in place)."""
    h, w = (int(v) for v in hw_shape)
    if _check_size(size) is None:
        return torch.zeros(h * w, dtype=torch.long, device=device)
    gw = region_grid(hw_shape, size)[1]
    r = torch.arange(h, device=device)[:, None] // size
    c = torch.arange(w, device=device)[None, :] // size
    return (r * gw + c).reshape(-1)


def region_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average ``x`` over ``S x S`` regions (real pixels only at the bottom/right border).

    Args:
        x (Tensor): ``[B, C, H, W]`` or ``[B, H, W]`` (floating point), any ``H, W >= 1``.
        size (int): Region side ``S`` (>= 1).

    Returns:
        Tensor: ``[B, C, ceil(H/S), ceil(W/S)]`` (``[B, ...]`` without ``C`` for 3-D input).
    """
    _check_size(size, allow_none=False)
    if x.dim() == 3:
        return region_pool(x.unsqueeze(1), size).squeeze(1)
    if x.dim() != 4:
        raise ValueError(f'x must be [B, C, H, W] or [B, H, W], got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'x must be floating point, got {x.dtype}')
    h, w = x.shape[-2:]
    if size == 1:
        return x
    pad_h, pad_w = (-h) % size, (-w) % size
    if pad_h == 0 and pad_w == 0:
        return F.avg_pool2d(x, size, size)
    sums = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), size, size, divisor_override=1)
    rows, cols = region_extents((h, w), size, x.device)
    return sums / (rows[:, None] * cols[None, :]).to(x.dtype)


def region_pool_tokens(x: torch.Tensor, hw_shape: Sequence[int], size: int,
                       factor: Optional[int] = None) -> torch.Tensor:
    """:func:`region_pool` for channels-last tokens: ``[B, ceil(H/S), ceil(W/S), C]``.

    Args:
        x (Tensor): ``[B, H*W, C]`` tokens (row-major, no extra tokens), or (with ``factor``)
            a ``[B, H/(S/f), W/(S/f), C]`` map already pooled at ``S / factor``, to be pooled
            by ``factor`` more (only when ``S`` divides the map).
        hw_shape (Sequence[int]): ``(H, W)`` of the token map.
        size (int): Region side ``S``.
        factor (int, optional): See ``x``.

    The tokens are pooled as what they are in memory, a channels-last map (``avg_pool2d`` of
    that view: no copy, and on CPU a few times faster than summing the strided token layout);
    a map that does not divide by ``S`` goes through :func:`region_pool` (bottom/right border
    regions average their real tokens).
    """
    _check_size(size, allow_none=False)
    h, w = hw_shape
    b, c = x.shape[0], x.shape[-1]
    if factor is None and (x.dim() != 3 or x.shape[1] != h * w):
        raise ValueError(f'x must be [B, N={h}*{w}, C], got shape {tuple(x.shape)}')
    if h % size == 0 and w % size == 0:
        f = size if factor is None else factor
        src = size // f  # side of x's cells in tokens
        m = x.reshape(b, h // src, w // src, c).permute(0, 3, 1, 2)
        return F.avg_pool2d(m, f, f).permute(0, 2, 3, 1)
    if factor is not None:
        raise ValueError('a pooled map can only be pooled further when the map divides')
    return region_pool(x.reshape(b, h, w, c).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
