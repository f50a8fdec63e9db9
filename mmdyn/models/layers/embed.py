"""Patch embeddings and position-embedding resizing.

:class:`PatchEmbed` is mmcv's ``PatchEmbed`` (a convolution and an optional norm; the parameter
names ``projection`` and ``norm`` are mmcv's) with the output grid and the FLOPs of an input
size. It covers the non-overlapping embeddings of PVT v1 and ViT (``kernel = stride``) and,
through :func:`overlap_patch_embed`, PVTv2's overlapping ones (``7x7/4`` pad 3, ``3x3/2``
pad 1).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import PatchEmbed as _MMCVPatchEmbed

from mmdyn.analysis import flops as fl
from ..utils.checks import check_images

__all__ = ['PatchEmbed', 'overlap_patch_embed', 'resize_pos_embed']


def _pair(x) -> Tuple[int, int]:
    if isinstance(x, (tuple, list)):
        return int(x[0]), int(x[1])
    return int(x), int(x)


class PatchEmbed(_MMCVPatchEmbed):
    """mmcv ``PatchEmbed`` plus :meth:`out_shape` and :meth:`flops`.

    Args are mmcv's: ``in_channels, embed_dims, conv_type='Conv2d', kernel_size, stride,
    padding ('corner' | 'same' | int), dilation, bias, norm_cfg, input_size, init_cfg``.
    ``forward(x[B, C, H, W]) -> (tokens[B, h*w, embed_dims], (h, w))``.
    """

    def __init__(self, in_channels: int = 3, embed_dims: int = 768, kernel_size=16, stride=None,
                 padding='corner', **kwargs):
        super().__init__(in_channels=in_channels, embed_dims=embed_dims, kernel_size=kernel_size,
                         stride=stride, padding=padding, **kwargs)
        self.in_channels = in_channels
        self.embed_dims = embed_dims

    def padded_shape(self, img_shape: Sequence[int]) -> Tuple[int, int]:
        """Input size the convolution sees after mmcv's adaptive padding (if any)."""
        h, w = _pair(img_shape)
        if self.adaptive_padding is not None:
            ph, pw = self.adaptive_padding.get_pad_shape((h, w))
            h, w = h + ph, w + pw
        return h, w

    def out_shape(self, img_shape: Sequence[int]) -> Tuple[int, int]:
        """Token grid produced from an ``img_shape = (H, W)`` input."""
        p = self.projection
        return fl.conv2d_out_shape(self.padded_shape(img_shape), p.kernel_size, p.stride,
                                   p.padding, p.dilation)

    def flops(self, img_shape: Sequence[int]) -> int:
        """MACs of the projection for an ``img_shape`` input (the norm is not counted)."""
        p = self.projection
        return fl.conv2d_flops(self.out_shape(img_shape), p.in_channels, p.out_channels,
                               p.kernel_size, p.groups)

    def forward(self, x: torch.Tensor):
        check_images(self, x, what='input')
        return super().forward(x)


def overlap_patch_embed(in_channels: int, embed_dims: int, kernel_size: int, stride: int,
                        norm_cfg: Optional[dict] = dict(type='LN', eps=1e-6),
                        bias: bool = True) -> PatchEmbed:
    """PVTv2 overlapping patch embedding: ``kernel x kernel`` conv, stride ``stride``, padding
    ``kernel // 2``, then the norm."""
    return PatchEmbed(in_channels=in_channels, embed_dims=embed_dims, kernel_size=kernel_size,
                      stride=stride, padding=kernel_size // 2, bias=bias, norm_cfg=norm_cfg)


def resize_pos_embed(pos_embed: torch.Tensor, src_shape: Sequence[int],
                     dst_shape: Sequence[int], mode: str = 'bicubic',
                     num_extra_tokens: int = 0) -> torch.Tensor:
    """Resize a ``[1, extra + h*w, C]`` position embedding from grid ``src_shape`` to
    ``dst_shape`` (``align_corners=False``); the leading ``num_extra_tokens`` (cls/dist) are
    kept as they are."""
    src_h, src_w = _pair(src_shape)
    dst_h, dst_w = _pair(dst_shape)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != num_extra_tokens + src_h * src_w:
        raise ValueError(f'position embedding {tuple(pos_embed.shape)} does not hold '
                         f'{num_extra_tokens} extra tokens and a {src_h}x{src_w} grid')
    if (src_h, src_w) == (dst_h, dst_w):
        return pos_embed
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:]
    c = grid.shape[-1]
    grid = grid.reshape(1, src_h, src_w, c).permute(0, 3, 1, 2)
    kwargs = {} if mode in ('nearest', 'area') else dict(align_corners=False)
    grid = F.interpolate(grid.float(), size=(dst_h, dst_w), mode=mode, **kwargs)
    grid = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)

