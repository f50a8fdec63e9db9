"""Pre-norm transformer blocks of the static hosts (and of the dynamic methods built on them).

``x = x + drop_path(attn(norm1(x)))``; ``x = x + drop_path(ffn(norm2(x)))``.

:class:`PVTBlock` (spatial-reduction attention; plain MLP for PVT v1, MixFFN for PVTv2) and
:class:`ViTBlock` (plain attention and MLP) share one implementation, which also runs on a
subset of the tokens: ``query`` are the tokens to update (gathered by the caller, e.g. into a
padded batch), keys and values come from the full map ``x``. The block returns the updated
query tokens; the caller scatters them back.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import DropPath
from mmengine.model import BaseModule

from .attention import SRAttention
from .ffn import MLP, MixFFN

__all__ = ['TransformerBlock', 'PVTBlock', 'ViTBlock', 'drop_path_rates', 'layer_cfg_at']


class TransformerBlock(BaseModule):
    """Pre-norm block: LN, :class:`SRAttention`, drop-path, LN, FFN, drop-path.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN hidden width / ``embed_dims``.
        sr_ratio (int): Spatial reduction of keys/values (1: none).
        linear (bool): PVTv2-Li linear SR (and the ReLU of its MixFFN).
        use_conv_ffn (bool): MixFFN (PVTv2) instead of the plain MLP.
        qkv_bias (bool): Bias of the q/kv projections.
        drop (float): Dropout after the attention projection and in the FFN.
        attn_drop (float): Dropout of the attention weights.
        drop_path (float): Stochastic-depth rate of both residual branches.
        norm_cfg (dict): Norms of the block (and, by default, of the reduced keys/values).
        act_cfg (dict): FFN activation.
        sr_norm_cfg (dict, optional): Norm of the reduced keys/values; default ``norm_cfg``
            (the official PVT v1 uses LN eps 1e-5 there, 1e-6 in the block norms).
        ffn_extra_dims (int): Extension point for methods that feed extra per-token features
            to the FFN (DVT's feature reuse): ``norm2`` and the FFN's ``fc1`` read
            ``embed_dims + ffn_extra_dims`` channels, the concatenation of the tokens and the
            ``extra`` tensor given to :meth:`ffn_residual` / ``forward(ffn_extra=...)``; the
            residual stays ``embed_dims`` wide. Default 0 (plain MLP only).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 sr_ratio: int = 1,
                 linear: bool = False,
                 use_conv_ffn: bool = False,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 sr_norm_cfg: Optional[dict] = None,
                 ffn_extra_dims: int = 0,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.ffn_extra_dims = int(ffn_extra_dims)
        if self.ffn_extra_dims and use_conv_ffn:
            raise ValueError('ffn_extra_dims needs the plain MLP FFN, not MixFFN')
        hidden = int(embed_dims * mlp_ratio)
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = self.build_attention(
            embed_dims, num_heads, sr_ratio=sr_ratio, linear=linear, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
            norm_cfg=norm_cfg if sr_norm_cfg is None else sr_norm_cfg)
        ffn_in = embed_dims + self.ffn_extra_dims
        self.norm2 = build_norm_layer(norm_cfg, ffn_in)[1]
        if use_conv_ffn:
            self.ffn = MixFFN(embed_dims, hidden, linear=linear, act_cfg=act_cfg, drop=drop)
        else:
            self.ffn = MLP(embed_dims, hidden, act_cfg=act_cfg, drop=drop, in_dims=ffn_in)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def build_attention(self, embed_dims: int, num_heads: int, **cfg) -> nn.Module:
        """The token mixer (called by ``__init__``): :class:`SRAttention` with ``cfg``
        (``sr_ratio``, ``linear``, ``qkv_bias``, ``qk_scale``, ``attn_drop``, ``proj_drop``,
        ``norm_cfg``). A block with another attention (e.g. DPVT's deformable one) overrides
        it."""
        return SRAttention(embed_dims, num_heads, **cfg)

    def attn_residual(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]] = None,
                      query: Optional[torch.Tensor] = None,
                      key_padding_mask: Optional[torch.Tensor] = None,
                      attn_bias: Optional[torch.Tensor] = None,
                      return_logits: bool = False):
        """``q + drop_path(attn(norm1(q), keys/values from norm1(x)))`` with ``q = query or x``;
        with ``return_logits`` also the attention's pre-softmax logits (see
        :class:`SRAttention`)."""
        xn = self.norm1(x)
        qn = None if query is None else self.norm1(query)
        base = x if query is None else query
        out = self.attn(xn, hw_shape, query=qn, key_padding_mask=key_padding_mask,
                        attn_bias=attn_bias, return_logits=return_logits)
        if return_logits:
            out, logits = out
            return base + self.drop_path(out), logits
        return base + self.drop_path(out)

    def ffn_residual(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]] = None,
                     index: Optional[torch.Tensor] = None,
                     extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x + drop_path(ffn(norm2(x)))``; ``index`` places a token subset on the map for
        MixFFN (see :mod:`mmdyn.models.layers.ffn`). With ``ffn_extra_dims``, ``extra``
        (``[B, N, ffn_extra_dims]``) is concatenated to ``x`` before ``norm2``:
        ``x + drop_path(ffn(norm2([x, extra])))``."""
        if (extra is None) != (self.ffn_extra_dims == 0):
            raise ValueError(f'this block reads {self.ffn_extra_dims} extra FFN channels; got '
                             f'extra={None if extra is None else tuple(extra.shape)}')
        y = x if extra is None else torch.cat([x, extra], dim=-1)
        return x + self.drop_path(self.ffn(self.norm2(y), hw_shape, index))

    def forward(self,
                x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None,
                query: Optional[torch.Tensor] = None,
                query_index: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None,
                attn_bias: Optional[torch.Tensor] = None,
                ffn_extra: Optional[torch.Tensor] = None,
                return_logits: bool = False):
        """Update ``query`` (default: all of ``x``).

        Args:
            x (Tensor): ``[B, N, C]`` tokens keys/values come from; the full ``hw_shape`` map
                when the attention reduces keys/values or the FFN is a MixFFN.
            hw_shape (tuple): ``(H, W)`` of ``x``.
            query (Tensor, optional): ``[B, Nq, C]`` tokens to update.
            query_index (LongTensor, optional): ``[B, Nq]`` positions of ``query`` in the
                ``H*W`` grid, ``-1`` for padding slots; needed by MixFFN with ``query``.
            key_padding_mask (BoolTensor, optional): ``[B, Nk]``, True for padding keys (keys
                after any reduction).
            attn_bias (Tensor, optional): additive attention bias ``[B, heads, Nq, Nk]``.
            ffn_extra (Tensor, optional): ``[B, Nq, ffn_extra_dims]`` features concatenated to
                the FFN input (needed exactly when the block has ``ffn_extra_dims``).
            return_logits (bool): Also return the attention's pre-softmax logits
                ``[B, heads, Nq, Nk]``.

        Returns:
            Tensor ``[B, Nq, C]`` (and the logits with ``return_logits``).
        """
        if query is not None and query_index is None and isinstance(self.ffn, MixFFN):
            raise ValueError('a MixFFN block updating a token subset needs query_index')
        y = self.attn_residual(x, hw_shape, query, key_padding_mask, attn_bias, return_logits)
        if return_logits:
            y, logits = y
            return self.ffn_residual(y, hw_shape, query_index, ffn_extra), logits
        return self.ffn_residual(y, hw_shape, query_index, ffn_extra)

    def forward_masked(self, x: torch.Tensor, mask: torch.Tensor,
                       hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Update every token of ``x`` with a multiplicative key mask (MSViT Eq. 10).

        ``A(i, j) = m_j exp(q_i k_j) / sum_p m_p exp(q_i k_p)``: keys with ``m_j = 0`` get
        exactly zero weight; ``mask`` (``[B, Nk]``, 0/1 values, possibly carrying a
        straight-through gradient) enters multiplicatively, so its gradient reaches every key,
        masked ones included (see ``padded_attention``'s ``key_weights``). The FFN runs on
        every token (the outputs of masked tokens are the caller's to ignore); a row with no
        unmasked key gets a zero attention update.

        Args:
            x (Tensor): ``[B, N, C]`` tokens.
            mask (Tensor): ``[B, Nk]`` key weights (``Nk``: keys after any reduction).
            hw_shape (tuple, optional): ``(H, W)`` of ``x``, needed with a reduction or MixFFN.

        Returns:
            Tensor ``[B, N, C]``.
        """
        out = self.attn(self.norm1(x), hw_shape, key_weights=mask)
        return self.ffn_residual(x + self.drop_path(out), hw_shape)

    def flops(self, num_queries, hw_shape: Optional[Sequence[int]] = None, num_keys=None,
              num_dw_tokens=None):
        """MACs of one forward.

        Args:
            num_queries: Tokens updated (int or per-image tensor).
            hw_shape: Grid of the full map keys/values come from (needed with a reduction).
            num_keys: Keys after reduction; default from ``hw_shape``, else ``num_queries``.
            num_dw_tokens: Positions the MixFFN depth-wise conv is counted at (default
                ``num_queries``).
        """
        return (self.attn.flops(num_queries, hw_shape, num_keys)
                + self.ffn.flops(num_queries, num_dw_tokens))


class PVTBlock(TransformerBlock):
    """PVT (v1: ``use_conv_ffn=False``) / PVTv2 (``use_conv_ffn=True``) block."""

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4., sr_ratio: int = 1,
                 linear: bool = False, use_conv_ffn: bool = True, **kwargs):
        super().__init__(embed_dims, num_heads, mlp_ratio=mlp_ratio, sr_ratio=sr_ratio,
                         linear=linear, use_conv_ffn=use_conv_ffn, **kwargs)


class ViTBlock(TransformerBlock):
    """ViT / DeiT block (no reduction, plain MLP)."""

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4., **kwargs):
        for k in ('sr_ratio', 'linear', 'use_conv_ffn'):
            if kwargs.pop(k, None):
                raise ValueError(f'ViTBlock does not take {k}')
        super().__init__(embed_dims, num_heads, mlp_ratio=mlp_ratio, **kwargs)


def drop_path_rates(stop: float, n: int) -> list:
    """Stochastic-depth rates of ``n`` blocks rising linearly from 0 to ``stop`` (plain
    Python floats: works on the meta device too)."""
    return [stop * i / (n - 1) if n > 1 else 0. for i in range(n)]


def layer_cfg_at(layer_cfgs: Union[dict, Sequence[dict], None], index: int,
                 num_layers: int) -> dict:
    """Extra block arguments of layer ``index`` from a host's ``layer_cfgs`` (the OpenMMLab
    backbones' convention): one dict for every layer, or one dict per layer."""
    if layer_cfgs is None:
        return {}
    if isinstance(layer_cfgs, dict):
        return dict(layer_cfgs)
    if len(layer_cfgs) != num_layers:
        raise ValueError(f'{len(layer_cfgs)} layer_cfgs for {num_layers} layers')
    return dict(layer_cfgs[index])
