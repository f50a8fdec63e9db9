"""Feed-forward networks of the transformer blocks: a plain MLP (ViT, DeiT, PVT v1) and PVTv2's
MixFFN (a 3x3 depth-wise convolution between the two linears).

Both take ``(x, hw_shape=None, index=None)``. ``index`` (``LongTensor [B, N]``) says where the
``N`` tokens of ``x`` sit in the ``H*W`` grid when ``x`` is a subset of the map (the kept tokens
of a dynamic method, padded per image; a padding slot has index ``-1``). The MLP ignores it;
MixFFN uses it to place the hidden tokens on a zero map for its depth-wise convolution, so the
convolution sees zeros where tokens were not computed.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule

from mmdyn.analysis import flops as fl

__all__ = ['MLP', 'MixFFN']


class MLP(BaseModule):
    """``fc1 -> act -> drop -> fc2 -> drop``.

    ``in_dims`` (default ``embed_dims``): channels ``fc1`` reads, e.g. the tokens with extra
    features concatenated (DVT's feature reuse); ``fc2`` writes ``embed_dims``."""

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.,
                 init_cfg=None,
                 in_dims: Optional[int] = None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.hidden_dims = hidden_dims
        self.in_dims = embed_dims if in_dims is None else int(in_dims)
        self.fc1 = nn.Linear(self.in_dims, hidden_dims)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]] = None,
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))

    def flops(self, num_tokens, num_dw_tokens=None):
        """MACs for ``num_tokens`` tokens (``num_dw_tokens`` is accepted and ignored)."""
        return fl.mlp_flops(num_tokens, self.embed_dims, self.hidden_dims,
                            in_dims=None if self.in_dims == self.embed_dims else self.in_dims)


class MixFFN(BaseModule):
    """PVTv2 FFN: ``fc1 -> [ReLU if linear] -> dwconv 3x3 -> act -> drop -> fc2 -> drop``.

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Hidden width.
        kernel_size (int): Depth-wise kernel. Default 3 (padding keeps the map size).
        linear (bool): PVTv2-Li adds a ReLU after ``fc1``. Default False.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 kernel_size: int = 3,
                 linear: bool = False,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.hidden_dims = hidden_dims
        self.kernel_size = kernel_size
        self.linear = linear
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.relu = nn.ReLU() if linear else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, kernel_size,
                                padding=kernel_size // 2, groups=hidden_dims)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def _dw(self, h: torch.Tensor, hw_shape: Sequence[int],
            index: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = h.shape
        hh, ww = hw_shape
        if index is None:
            if n != hh * ww:
                raise ValueError(f'MixFFN got {n} tokens for a {hh}x{ww} map; pass `index` '
                                 'when the tokens are a subset of the map')
            # a channels-last view: no copy, and the faster depth-wise kernel on CPU
            m = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
            return self.dwconv(m).permute(0, 2, 3, 1).reshape(b, n, c)
        if index.shape != (b, n):
            raise ValueError(f'index must be [B, N] = {(b, n)}, got {tuple(index.shape)}')
        # slot H*W collects the padding (index -1) and is dropped
        idx = torch.where(index < 0, torch.full_like(index, hh * ww), index).long()
        grid = h.new_zeros(b, hh * ww + 1, c)
        grid.scatter_(1, idx[..., None].expand(-1, -1, c), h)
        m = grid[:, :hh * ww].reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        m = self.dwconv(m).permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        m = torch.cat([m, m.new_zeros(b, 1, c)], dim=1)
        return m.gather(1, idx[..., None].expand(-1, -1, c))

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int],
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        if hw_shape is None:
            raise ValueError('MixFFN needs hw_shape for its depth-wise convolution')
        h = self.relu(self.fc1(x))
        h = self.drop(self.act(self._dw(h, hw_shape, index)))
        return self.drop(self.fc2(h))

    def flops(self, num_tokens, num_dw_tokens=None):
        """MACs for ``num_tokens`` tokens; the depth-wise convolution is counted at
        ``num_dw_tokens`` positions (default ``num_tokens``)."""
        return fl.mixffn_flops(num_tokens, self.embed_dims, self.hidden_dims, self.kernel_size,
                               num_dw_tokens)
