"""Inputs smaller than a PVT-hosted backbone can take: padded up to its minimum size.

A PVT stage embeds its input with a convolution (PVT v1: ``kernel = stride``, no padding) and its
attention reduces the key/value grid with a ``sr x sr`` convolution of stride ``sr``; on an image
so small (or thin) that a grid is narrower than such a kernel, torch stops with "kernel size
can't be greater than actual input size". As mmdet's and mmseg's PVTs pad their patch embeddings'
inputs (adaptive padding), the backbones here pad the image, at the bottom and on the right with
zeros, to the smallest size every stage accepts; larger inputs are left as they are. The FLOPs
functions count the padded size, so that they agree with what runs.
"""
from typing import List, Sequence, Tuple

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_images
from .dynamic import image_hw

__all__ = ['min_input_size', 'padded_input_shape', 'pad_to_min_size']

_MAX = 1 << 14
# A backbone's minimum size depends on its architecture only, fixed at construction.
_MIN_SIZES: 'weakref.WeakKeyDictionary[nn.Module, int]' = weakref.WeakKeyDictionary()


def _sr_kernel(block: nn.Module) -> int:
    sr = getattr(getattr(block, 'attn', None), 'sr', None)
    if isinstance(sr, nn.Conv2d):
        return int(max(sr.kernel_size))
    return 1


def _embeds_and_reductions(backbone: nn.Module) -> Tuple[List[nn.Module], List[int]]:
    """The patch embedding of each stage, in order, and the largest key/value reduction kernel
    of its blocks (1: none)."""
    if hasattr(backbone, 'stem') and hasattr(backbone, 'downs'):  # DiT: scales of a grid
        embeds = [backbone.stem] + [d[0].embed for d in backbone.downs]
        blocks = [list(backbone.stages[i][0]) for i in range(len(embeds))]
    else:  # PVT, PVTv2, DGE-PVT
        embeds = [st.patch_embed for st in backbone.stages]
        blocks = [list(st.blocks) for st in backbone.stages]
    return embeds, [max([_sr_kernel(b) for b in bl] or [1]) for bl in blocks]


def _fits(embeds, reductions, n: int) -> bool:
    hw = (n, n)
    for embed, r in zip(embeds, reductions):
        p = embed.projection
        padded = embed.padded_shape(hw)
        kernel = p.dilation[0] * (p.kernel_size[0] - 1) + 1
        if min(padded) + 2 * p.padding[0] < kernel:
            return False
        hw = embed.out_shape(hw)
        if min(hw) < max(1, r):
            return False
    return True


@torch.compiler.assume_constant_result
def min_input_size(backbone: nn.Module) -> int:
    """The smallest image side every stage of ``backbone`` accepts (computed once per
    backbone). A constant of the architecture: ``torch.compile`` takes the result as it is,
    without tracing the cache (a guard on the cache being empty would recompile the next
    call)."""
    if backbone not in _MIN_SIZES:
        embeds, reductions = _embeds_and_reductions(backbone)
        _MIN_SIZES[backbone] = next(
            (n for n in range(1, _MAX) if _fits(embeds, reductions, n)), 1)
    return _MIN_SIZES[backbone]


def padded_input_shape(backbone: nn.Module, img_shape: Sequence[int]) -> Tuple[int, int]:
    """``img_shape`` (H, W) raised to the backbone's minimum size, side by side."""
    h, w = image_hw(img_shape)
    m = min_input_size(backbone)
    return max(h, m), max(w, m)


def pad_to_min_size(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` padded with zeros at the bottom / right up to the minimum size
    (a ``ValueError`` naming the backbone unless ``x`` is ``[B, backbone.in_channels, H, W]``:
    the first step of a PVT-hosted backbone's forward)."""
    check_images(backbone, x)
    h, w = x.shape[-2:]
    ph, pw = padded_input_shape(backbone, (h, w))
    if (ph, pw) == (h, w):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h))
