"""Pool a map into S x S regions and broadcast back.

A region is an ``S x S`` block of pixels (tokens); a ``[B, C, H, W]`` map gives a
``[B, C, ceil(H / S), ceil(W / S)]`` region map. When ``H`` or ``W`` is not a multiple of ``S``
the map is padded at the bottom/right and the last row/column of regions averages over its real
pixels only. :func:`region_unpool` repeats every region value over its ``S x S`` block and crops
back to ``H x W``. Token-layout variants take ``[B, N, C]`` with ``hw_shape = (H, W)``.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'region size S must be an int >= 1, got {size!r}')
    return size


def region_grid(hw_shape: Sequence[int], size: int) -> Tuple[int, int]:
    """Region grid ``(ceil(H / S), ceil(W / S))`` of an ``H x W`` map."""
    _check_size(size)
    h, w = hw_shape
    return -(-h // size), -(-w // size)


def _region_counts(h: int, w: int, size: int, device, dtype) -> torch.Tensor:
    """Number of real pixels of every region, ``[gh, gw]``."""
    gh, gw = region_grid((h, w), size)
    rows = (h - torch.arange(gh, device=device) * size).clamp(max=size)
    cols = (w - torch.arange(gw, device=device) * size).clamp(max=size)
    return (rows[:, None] * cols[None, :]).to(dtype)


def region_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average ``x`` over ``S x S`` regions (real pixels only at the bottom/right border).

    Args:
        x (Tensor): ``[B, C, H, W]`` or ``[B, H, W]`` (floating point), any ``H, W >= 1``.
        size (int): Region side ``S`` (>= 1).

    Returns:
        Tensor: ``[B, C, ceil(H/S), ceil(W/S)]`` (``[B, ...]`` without ``C`` for 3-D input).
    """
    _check_size(size)
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
    return sums / _region_counts(h, w, size, x.device, x.dtype)


def multi_region_pool(x: torch.Tensor, sizes: Sequence[int]) -> List[torch.Tensor]:
    """:func:`region_pool` at several granularities, one output per size."""
    if len(sizes) == 0:
        raise ValueError('sizes must not be empty')
    return [region_pool(x, s) for s in sizes]


def region_unpool(r: torch.Tensor, size: int, hw_shape: Sequence[int]) -> torch.Tensor:
    """Broadcast region values back to pixels: repeat each over its block, crop to ``H x W``.

    Args:
        r (Tensor): ``[B, C, gh, gw]`` or ``[B, gh, gw]`` (any dtype, e.g. masks or choices).
        size (int): Region side ``S``.
        hw_shape (Sequence[int]): Output ``(H, W)``; ``(gh, gw)`` must equal its region grid.

    Returns:
        Tensor: ``[B, C, H, W]`` (``[B, H, W]`` for 3-D input).
    """
    grid = region_grid(hw_shape, size)
    if r.dim() not in (3, 4) or tuple(r.shape[-2:]) != grid:
        raise ValueError(f'r must be [B, (C,) {grid[0]}, {grid[1]}] for hw_shape '
                         f'{tuple(hw_shape)} and S={size}, got shape {tuple(r.shape)}')
    h, w = hw_shape
    out = r.repeat_interleave(size, dim=-2).repeat_interleave(size, dim=-1)
    return out[..., :h, :w]


def region_ids(hw_shape: Sequence[int], size: int, device=None) -> torch.Tensor:
    """Region index (row-major on the region grid) of every pixel, ``Long[H * W]``.

    Pixel ``i`` (row-major) lies in region ``region_ids(...)[i]``: the map from a fine token to
    its parent coarse token.
    """
    h, w = hw_shape
    gh, gw = region_grid(hw_shape, size)
    ids = torch.arange(gh * gw, device=device).view(1, gh, gw)
    return region_unpool(ids, size, (h, w)).reshape(-1)


def _tokens_to_map(x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
    h, w = hw_shape
    if x.dim() != 3 or x.shape[1] != h * w:
        raise ValueError(f'x must be [B, N={h}*{w}, C], got shape {tuple(x.shape)}')
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def region_pool_tokens(x: torch.Tensor, hw_shape: Sequence[int],
                       size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """:func:`region_pool` for tokens.

    Args:
        x (Tensor): ``[B, N, C]`` with ``N = H * W`` (row-major; no extra tokens).
        hw_shape (Sequence[int]): ``(H, W)``.
        size (int): Region side ``S``.

    Returns:
        tuple[Tensor, tuple[int, int]]: ``[B, gh * gw, C]`` region tokens and ``(gh, gw)``.
    """
    r = region_pool(_tokens_to_map(x, hw_shape), size)
    return r.flatten(2).transpose(1, 2), tuple(r.shape[-2:])


def region_unpool_tokens(r: torch.Tensor, size: int, hw_shape: Sequence[int]) -> torch.Tensor:
    """:func:`region_unpool` for tokens: ``[B, gh * gw, C]`` -> ``[B, H * W, C]``."""
    gh, gw = region_grid(hw_shape, size)
    out = region_unpool(_tokens_to_map(r, (gh, gw)), size, hw_shape)
    return out.flatten(2).transpose(1, 2)
