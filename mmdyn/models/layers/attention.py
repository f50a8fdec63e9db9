"""Multi-head attention with optional spatial reduction of keys and values.

One module covers the attention of ViT/DeiT (no reduction), PVT v1 (strided-conv reduction +
LN) and PVTv2 (the same, or the "linear" variant: adaptive average pooling to 7x7, 1x1 conv,
LN, GELU). Its parameters use the official PVT layout (``q``, ``kv``, ``proj``, ``sr``,
``norm``), so the dynamic methods can compute queries for a subset of the tokens while keys and
values come from the full (reduced) map.

Attention is computed by :func:`~mmdyn.models.layers.token_sets.padded_attention` (the one
masked attention of the library: NaN-safe for a query with no valid key) with
:func:`torch.nn.functional.scaled_dot_product_attention`. Setting
``use_sdpa = False`` on a module (or :func:`explicit_attention` on a model) switches to explicit
``q @ k^T`` / ``softmax`` / ``@ v`` matrix products, numerically the same; FLOP counters that do
not see SDPA (``FlopCounterMode`` on CPU, mmengine's analyzer) can count that path.
"""
import contextlib
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule

from mmdyn.analysis import flops as fl
from .token_sets import padded_attention

__all__ = ['SRAttention', 'channels_last_convs_', 'explicit_attention', 'head_dims', 'nlc_to_nchw',
           'nchw_to_nlc']


def nlc_to_nchw(x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
    """``[B, H*W, C]`` tokens to a ``[B, C, H, W]`` map: the tokens' memory seen as a
    channels-last map (a view where the tokens allow one, as ``Tensor.reshape``)."""
    h, w = hw_shape
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f'{n} tokens do not form a {h}x{w} map')
    # reshape, then permute: a one-image map keeps the batch stride H*W*C.
    # (``x.transpose(1, 2).reshape(b, c, h, w)`` is the same view, but with a batch stride of
    # C when b == 1, and oneDNN then convolves the map about twice as slowly on the CPU.)
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def channels_last_convs_(module: nn.Module) -> nn.Module:
    """Store every ``Conv2d`` weight of ``module`` channels-last, in place; returns ``module``.

    The maps :func:`nlc_to_nchw` hands a convolution are channels-last; with a weight in the
    default layout, oneDNN and cuDNN copy the weight to channels-last on every call (at batch 1
    on the CPU about 3 ms of a PVTv2-B2 forward at 224). An image input (the stem) then gives
    a channels-last output, whose tokens are contiguous without a copy. In-place initialisers,
    ``load_state_dict`` and ``Module.to`` keep the layout; the values are unchanged.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return module


def head_dims(embed_dims: int, num_heads: int) -> int:
    """Channels per head, ``embed_dims // num_heads``; a ``ValueError`` unless it divides."""
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
    return embed_dims // num_heads


def nchw_to_nlc(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map to ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)


class SRAttention(BaseModule):
    """Multi-head attention whose keys/values may be spatially reduced.

    Args:
        embed_dims (int): Token width ``C``.
        num_heads (int): Number of heads; must divide ``embed_dims``.
        sr_ratio (int): PVT spatial reduction: keys/values are computed from a
            ``sr x sr``, stride-``sr`` convolution of the map followed by a norm. 1: none.
        linear (bool): PVTv2 linear SR: adaptive average pooling to ``pool_size`` squared, 1x1
            conv, norm, GELU, whatever ``sr_ratio`` is.
        pool_size (int): Output side of the linear SR pooling. Default 7.
        qkv_bias (bool): Bias of the q and kv projections. Default True.
        qk_scale (float, optional): Overrides ``head_dim ** -0.5``.
        attn_drop (float): Dropout on the attention weights (training only).
        proj_drop (float): Dropout after the output projection.
        norm_cfg (dict): Norm of the reduced keys/values.
        act_cfg (dict): Activation of the linear SR.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 linear: bool = False,
                 pool_size: int = 7,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.head_dims = head_dims(embed_dims, num_heads)
        if sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dims ** -0.5
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.pool_size = pool_size
        self.attn_drop = attn_drop
        self.use_sdpa = True

        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        if linear:
            self.pool = nn.AdaptiveAvgPool2d(pool_size)
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=1)
            self.norm = build_norm_layer(norm_cfg, embed_dims)[1]
            self.act = build_activation_layer(act_cfg)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    @property
    def has_reduction(self) -> bool:
        return self.linear or self.sr_ratio > 1

    # ------------------------------------------------------------------ shapes and FLOPs
    def kv_shape(self, hw_shape: Sequence[int]) -> Tuple[int, int]:
        """Grid of the keys/values computed from a full ``hw_shape`` map."""
        return fl.sr_out_shape(hw_shape, self.sr_ratio, self.linear, self.pool_size)

    def num_keys(self, hw_shape: Sequence[int]) -> int:
        """Number of keys computed from a full ``hw_shape`` map (after any reduction)."""
        h, w = self.kv_shape(hw_shape)
        return h * w

    def flops(self, num_queries, hw_shape: Optional[Sequence[int]] = None, num_keys=None):
        """MACs of one forward.

        Args:
            num_queries: Queries processed (int or per-image tensor).
            hw_shape: Grid of the full map keys/values are computed from. Needed when the
                module reduces keys/values (the reduction runs on that whole map).
            num_keys: Keys entering attention, after any reduction. Default: derived from
                ``hw_shape`` (:meth:`num_keys`), or ``num_queries`` without ``hw_shape``
                (plain self-attention).
        """
        sr = 0
        if self.has_reduction:
            if hw_shape is None:
                raise ValueError('hw_shape is needed for the FLOPs of a reduced attention')
            sr = fl.sr_flops(hw_shape, self.embed_dims, self.sr_ratio, self.linear,
                             self.pool_size)
        if num_keys is None:
            num_keys = self.num_keys(hw_shape) if hw_shape is not None else num_queries
        return sr + fl.attention_flops(num_queries, num_keys, self.embed_dims)

    # ------------------------------------------------------------------ forward
    def reduce(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]]) -> torch.Tensor:
        """Tokens keys/values are projected from: the reduced map, or ``x`` itself."""
        if not self.has_reduction:
            return x
        if hw_shape is None:
            raise ValueError('hw_shape is needed for an attention with spatial reduction')
        m = nlc_to_nchw(x, hw_shape)
        if self.linear:
            m = self.sr(self.pool(m))
            return self.act(self.norm(nchw_to_nlc(m)))
        return self.norm(nchw_to_nlc(self.sr(m)))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dims).transpose(1, 2)

    def forward(self,
                x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None,
                query: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None,
                attn_bias: Optional[torch.Tensor] = None,
                return_logits: bool = False,
                key_weights: Optional[torch.Tensor] = None):
        """Attention of ``query`` (default ``x``) over keys/values from ``x``.

        The attention itself is :func:`~mmdyn.models.layers.token_sets.padded_attention`: a
        query with no valid key gives zeros (never NaN).

        Args:
            x (Tensor): ``[B, N, C]`` tokens keys and values are computed from. With a spatial
                reduction it must be the full ``hw_shape`` map (``N == H * W``).
            hw_shape (tuple): ``(H, W)`` of ``x``; required with a spatial reduction.
            query (Tensor, optional): ``[B, Nq, C]`` tokens to compute queries for (e.g. the
                kept tokens gathered into a padded batch). Default: ``x``.
            key_padding_mask (BoolTensor, optional): ``[B, Nk]``, True where a key is padding
                and must be ignored (the convention of ``nn.MultiheadAttention``); ``Nk`` is
                the number of keys after any reduction.
            attn_bias (Tensor, optional): additive float bias broadcastable to
                ``[B, heads, Nq, Nk]`` added to the scaled logits.
            return_logits (bool): Also return the scaled pre-softmax logits
                ``[B, heads, Nq, Nk]`` (bias included, mask not applied); uses the explicit
                path.
            key_weights (Tensor, optional): ``[B, Nk]`` multiplicative key mask (0/1 values,
                possibly with a straight-through gradient; keys at 0 get no weight), see
                ``padded_attention``; uses the explicit path.

        Returns:
            Tensor ``[B, Nq, C]`` (and the logits if asked).
        """
        if x.dim() != 3 or x.shape[-1] != self.embed_dims:
            raise ValueError(f'expected [B, N, {self.embed_dims}] tokens, got {tuple(x.shape)}')
        q_in = x if query is None else query
        if q_in.shape[0] != x.shape[0] or q_in.shape[-1] != self.embed_dims:
            raise ValueError(f'query {tuple(q_in.shape)} does not match tokens {tuple(x.shape)}')
        kv_in = self.reduce(x, hw_shape)
        q = self._split_heads(self.q(q_in))
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        k, v = self._split_heads(k), self._split_heads(v)
        key_mask = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != (x.shape[0], k.shape[2]):
                raise ValueError(f'key_padding_mask must be [B, Nk] = '
                                 f'{(x.shape[0], k.shape[2])}, got {tuple(key_padding_mask.shape)}')
            key_mask = ~key_padding_mask.bool()
        out = padded_attention(q, k, v, key_mask=key_mask,
                               dropout_p=self.attn_drop if self.training else 0.,
                               scale=self.scale, attn_bias=attn_bias, key_weights=key_weights,
                               explicit=not self.use_sdpa, return_logits=return_logits)
        if return_logits:
            out, logits = out
        out = out.transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], self.embed_dims)
        out = self.proj_drop(self.proj(out))
        if return_logits:
            return out, logits
        return out


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Within the block every :class:`SRAttention` of ``model`` uses explicit matmuls."""
    mods = [m for m in model.modules() if isinstance(m, SRAttention)]
    old = [m.use_sdpa for m in mods]
    for m in mods:
        m.use_sdpa = False
    try:
        yield model
    finally:
        for m, o in zip(mods, old):
            m.use_sdpa = o
