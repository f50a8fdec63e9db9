"""Deformable point attention (the vanilla encoder of DPVT, DGE paper Sec. 4).

Every query attends to ``num_points`` points per head, sampled bilinearly (zero padding) from the
value map around the query's reference point: ``offsets = Linear(q)`` (token units, per head and
point), ``weights = softmax_points(Linear(q))``, ``out = proj(sum_p w_p * v(ref + offset_p))``.
Values are ``Linear(x)`` of the full map (no spatial reduction). The offsets start on a circle:
head ``h`` points in direction ``2 pi h / heads`` (normalised so that ``max(|cos|, |sin|) = 1``),
point ``p`` at distance ``p + 1``; the offset weights start at zero.

In the backward the gradient of the sampling locations (so of the offset projection) is
multiplied by ``offset_grad_scale`` (default 0.1, as in the authors' DPVT code); the forward is
unchanged. ``offset_grad_scale=1`` gives the plain gradient.

A query's reference point is its token position ``(x, y)`` (token units), or any position given
with ``query_ref`` (DGE's pooled queries sit at the centre of their patch).

FLOPs (multiply-adds): value projection ``N C^2``, offsets ``Nq C (2 heads P)``, point weights
``Nq C (heads P)``, bilinear sampling and weighting ``5 Nq P C`` (4 taps + 1 weight per channel and
point), output projection ``Nq C^2``.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from .attention import head_dims
from .grad_scale import scale_grad
from .shape_constants import shape_constant

__all__ = ['DeformablePointAttention', 'token_reference_points']


@shape_constant
def token_reference_points(hw: Sequence[int], device=None) -> torch.Tensor:
    """``[H*W, 2]`` ``(x, y)`` positions of the tokens of an ``H x W`` map (token units).
    Cached per shape and device (:mod:`.shape_constants`: do not modify in place)."""
    h, w = (int(v) for v in hw)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing='ij')
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


class DeformablePointAttention(BaseModule):
    """Multi-head deformable point attention.

    Args:
        embed_dims (int): Token width ``C``.
        num_heads (int): Heads (must divide ``C``).
        num_points (int): Sampling points per head. Default 4 (the paper's).
        qkv_bias (bool): Bias of the value projection.
        attn_drop (float): Dropout of the sampling-point weights (training only).
        proj_drop (float): Dropout after the output projection.
        offset_grad_scale (float): Factor of the gradient of the sampling locations (forward
            unchanged). Default 0.1 (the authors' DPVT); 1 turns it off.
    """
    has_reduction = False

    def __init__(self, embed_dims: int, num_heads: int, num_points: int = 4,
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.,
                 offset_grad_scale: float = 0.1, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.head_dims = head_dims(embed_dims, num_heads)
        if num_points < 1:
            raise ValueError(f'num_points must be >= 1, got {num_points}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_points = num_points
        self.attn_drop = attn_drop
        self.offset_grad_scale = float(offset_grad_scale)
        self.v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.offsets = nn.Linear(embed_dims, num_heads * num_points * 2)
        self.weights = nn.Linear(embed_dims, num_heads * num_points)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.init_offsets()

    @torch.no_grad()
    def init_offsets(self) -> None:
        """Zero offset weights; biases on a circle per head, distance ``p + 1`` per point."""
        nn.init.zeros_(self.offsets.weight)
        th = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        d = torch.stack([th.cos(), th.sin()], -1)
        d = d / d.abs().max(-1, keepdim=True)[0]
        b = d[:, None, :] * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, :,
                                                                                       None]
        self.offsets.bias.copy_(b.reshape(-1))
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def num_keys(self, hw_shape) -> int:
        return int(hw_shape[0] * hw_shape[1])

    def flops(self, num_queries, hw_shape: Optional[Sequence[int]] = None, num_keys=None):
        """MACs of one forward for ``num_queries`` queries over an ``hw_shape`` value map."""
        if hw_shape is None:
            raise ValueError('hw_shape is needed for the FLOPs of deformable attention')
        c, hp = self.embed_dims, self.num_heads * self.num_points
        nq = num_queries.to(torch.float64) if torch.is_tensor(num_queries) else num_queries
        n = hw_shape[0] * hw_shape[1]
        out = n * c * c + nq * (c * 3 * hp + 5 * self.num_points * c + c * c)
        return int(out) if isinstance(out, float) and out.is_integer() else out

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int],
                query: Optional[torch.Tensor] = None,
                query_ref: Optional[torch.Tensor] = None, **kwargs) -> torch.Tensor:
        """Attention of ``query`` (default ``x``) over the value map of ``x``.

        Args:
            x (Tensor): ``[B, H*W, C]`` (normalised) tokens of the full map.
            hw_shape (tuple): ``(H, W)``.
            query (Tensor, optional): ``[B, Nq, C]`` (normalised) query tokens.
            query_ref (Tensor, optional): ``[B, Nq, 2]`` or ``[Nq, 2]`` ``(x, y)`` reference
                points in token units; default the token positions (``query`` must then be the
                full map).
        """
        if kwargs.get('key_padding_mask') is not None or kwargs.get('attn_bias') is not None:
            raise ValueError('deformable attention takes no key mask or attention bias')
        h, w = hw_shape
        b, n, c = x.shape
        if n != h * w:
            raise ValueError(f'{n} tokens do not form a {h}x{w} map')
        q = x if query is None else query
        nq = q.shape[1]
        if query_ref is None:
            if nq != n:
                raise ValueError('query_ref is needed when the queries are not the full map')
            query_ref = token_reference_points(hw_shape, x.device)
        if query_ref.dim() == 2:
            query_ref = query_ref[None].expand(b, -1, -1)
        heads, pts, hd = self.num_heads, self.num_points, self.head_dims
        v = self.v(x).reshape(b, h, w, heads, hd).permute(0, 3, 4, 1, 2)
        v = v.reshape(b * heads, hd, h, w)
        off = self.offsets(q).reshape(b, nq, heads, pts, 2)
        loc = query_ref.to(off.dtype)[:, :, None, None, :] + off  # token units
        loc = scale_grad(loc, self.offset_grad_scale)
        # align_corners=True: token i sits at -1 + 2 i / (size - 1). On an axis of one token
        # grid_sample reads that token whatever the coordinate (no zero padding), so there
        # the point reads it at coordinate 0 and its bilinear weight max(0, 1 - |loc|) is
        # applied with the attention weights
        gx = loc[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
        gy = loc[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
        edge = None
        for size, axis in ((w, 0), (h, 1)):
            if size == 1:
                wt = (1.0 - loc[..., axis].abs()).clamp(min=0)
                edge = wt if edge is None else edge * wt
        if w == 1:
            gx = torch.zeros_like(gx)
        if h == 1:
            gy = torch.zeros_like(gy)
        grid = torch.stack([gx, gy], -1).permute(0, 2, 1, 3, 4).reshape(b * heads, nq, pts, 2)
        sampled = F.grid_sample(v, grid, mode='bilinear', padding_mode='zeros',
                                align_corners=True)  # [B*heads, hd, Nq, P]
        attn = self.weights(q).reshape(b, nq, heads, pts).softmax(-1)
        if self.training and self.attn_drop > 0:
            attn = F.dropout(attn, p=self.attn_drop)
        if edge is not None:
            attn = attn * edge
        attn = attn.permute(0, 2, 1, 3).reshape(b * heads, 1, nq, pts)
        out = (sampled * attn).sum(-1)  # [B*heads, hd, Nq]
        out = out.reshape(b, heads * hd, nq).transpose(1, 2)
        return self.proj_drop(self.proj(out))
