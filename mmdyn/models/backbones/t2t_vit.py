"""T2T-ViT host (Tokens-to-Token ViT) for the DVT cascade.

Tokenizer: a soft split (``nn.Unfold``) of the image, a token transformer, a second soft split
(3x3, stride 2), a second token transformer, a third soft split (3x3, stride 2) and a linear
projection to ``embed_dims``; then a class token, a fixed sinusoidal position table and plain
pre-norm blocks (the core's :class:`ViTBlock`). The token transformers are the Performer kind of
T2T-ViT-12/14 (``token_type='performer'``: positive random features, linear in the tokens) or
plain single-head attention (``'transformer'``, mmpretrain's T2T-ViT_t kind). The first soft
split ``(kernel, stride, padding)`` sets the token grid at a given input size: ``(7, 4, 2)``
gives 14x14 at 224, ``(11, 6, 5)`` 10x10 and ``(14, 8, 3)`` 7x7 (the DVT exits).

The interface mirrors :class:`mmdyn.models.backbones.ViT` where DVT needs it: ``embed(x)`` (tokens
with the class token and position embedding, and the grid), ``blocks``, ``norm``,
``embed_dims``, ``depth``, ``arch_settings``, ``tokenizer_flops(img_shape)``,
``static_flops(img_shape)`` (MACs).
"""
import copy
import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule, ModuleList

from mmdyn.registry import MODELS
from ..layers.transformer_blocks import ViTBlock

__all__ = ['T2TViT', 'TokenPerformer', 'TokenTransformer', 'sinusoid_table']


def sinusoid_table(n: int, dims: int) -> torch.Tensor:
    """``[1, n, dims]`` fixed sinusoidal position table (sin on even, cos on odd channels)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(dims, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000., 2 * torch.div(i, 2, rounding_mode='floor') / dims)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table[None].float()


def _unfold_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class TokenPerformer(BaseModule):
    """Token transformer with Performer attention (``in_dims -> dims`` tokens).

    ``y = v + proj(softmax-kernel attention)`` with positive random features
    ``phi(x) = exp(w x - |x|^2 / 2) / sqrt(m)`` (``m = dims * kernel_ratio`` fixed orthogonal
    features), then ``y + MLP(LN(y))``.
    """

    def __init__(self, in_dims: int, dims: int, kernel_ratio: float = 0.5, eps: float = 1e-8):
        super().__init__()
        self.in_dims, self.dims = in_dims, dims
        self.m = int(dims * kernel_ratio)
        self.eps = eps
        self.norm1 = nn.LayerNorm(in_dims)
        self.kqv = nn.Linear(in_dims, 3 * dims)
        self.proj = nn.Linear(dims, dims)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = nn.Sequential(nn.Linear(dims, dims), nn.GELU(), nn.Linear(dims, dims))
        w = torch.randn(self.m, dims)
        if not w.is_meta:
            w = torch.linalg.qr(w.T)[0].T * math.sqrt(self.m)
        self.register_buffer('w', w, persistent=True)

    def _features(self, x):
        sq = (x * x).sum(-1, keepdim=True) / 2
        return torch.exp(x @ self.w.t() - sq) / math.sqrt(self.m)

    def forward(self, x):
        k, q, v = self.kqv(self.norm1(x)).chunk(3, dim=-1)
        kp, qp = self._features(k), self._features(q)  # [B, T, m]
        denom = qp @ kp.sum(dim=1).unsqueeze(-1)  # [B, T, 1]
        kv = v.transpose(1, 2) @ kp  # [B, dims, m]
        y = (qp @ kv.transpose(1, 2)) / (denom + self.eps)  # [B, T, dims]
        y = v + self.proj(y)
        return y + self.mlp(self.norm2(y))

    def flops(self, n: int) -> int:
        d, m = self.dims, self.m
        return n * (self.in_dims * 3 * d + 2 * d * m + m + 2 * d * m + 3 * d * d)


class TokenTransformer(BaseModule):
    """Token transformer with single-head softmax attention (``in_dims -> dims`` tokens)."""

    def __init__(self, in_dims: int, dims: int):
        super().__init__()
        self.in_dims, self.dims = in_dims, dims
        self.norm1 = nn.LayerNorm(in_dims)
        self.qkv = nn.Linear(in_dims, 3 * dims, bias=False)
        self.proj = nn.Linear(dims, dims)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = nn.Sequential(nn.Linear(dims, dims), nn.GELU(), nn.Linear(dims, dims))

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        a = ((q * self.dims ** -0.5) @ k.transpose(1, 2)).softmax(-1)
        y = v + self.proj(a @ v)
        return y + self.mlp(self.norm2(y))

    def flops(self, n: int) -> int:
        d = self.dims
        return n * (self.in_dims * 3 * d + 3 * d * d) + 2 * n * n * d


@MODELS.register_module()
class T2TViT(BaseModule):
    """T2T-ViT backbone (returns the class token after the final norm).

    Args:
        arch (str | dict): ``'t2t-vit-12' | 't2t-vit-14' | 't2t-vit-19'`` or a dict with
            ``embed_dims``, ``depth``, ``num_heads``, ``mlp_ratio``.
        img_size (int): Input side the token grid is computed for. Default 224.
        soft_split (tuple): ``(kernel, stride, padding)`` of the first soft split.
        token_dims (int): Width of the token transformers. Default 64.
        token_type (str): ``'performer'`` (default) or ``'transformer'``.
        qkv_bias (bool): Default False (as T2T-ViT).
        drop_path_rate (float): Default 0.
    """
    arch_zoo = {
        't2t-vit-12': dict(embed_dims=256, depth=12, num_heads=4, mlp_ratio=2),
        't2t-vit-14': dict(embed_dims=384, depth=14, num_heads=6, mlp_ratio=3),
        't2t-vit-19': dict(embed_dims=448, depth=19, num_heads=7, mlp_ratio=3),
    }

    def __init__(self, arch: Union[str, dict] = 't2t-vit-14', img_size: int = 224,
                 soft_split: Sequence[int] = (7, 4, 2), token_dims: int = 64,
                 token_type: str = 'performer', in_channels: int = 3, qkv_bias: bool = False,
                 drop_path_rate: float = 0., init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise KeyError(f'T2TViT: unknown arch {arch!r}; choose one of '
                               f'{sorted(self.arch_zoo)} or give a dict')
            arch = self.arch_zoo[arch]
        self.arch_settings = copy.deepcopy(dict(arch))
        s = self.arch_settings
        self.embed_dims, self.depth = s['embed_dims'], s['depth']
        if token_type not in ('performer', 'transformer'):
            raise ValueError(f'token_type must be performer or transformer, got {token_type}')
        self.img_size = int(img_size)
        self.soft_split = tuple(int(v) for v in soft_split)
        k, st, p = self.soft_split
        self.split0 = nn.Unfold(k, stride=st, padding=p)
        self.split1 = nn.Unfold(3, stride=2, padding=1)
        self.split2 = nn.Unfold(3, stride=2, padding=1)
        tok = TokenPerformer if token_type == 'performer' else TokenTransformer
        self.token1 = tok(in_channels * k * k, token_dims)
        self.token2 = tok(token_dims * 9, token_dims)
        self.project = nn.Linear(token_dims * 9, self.embed_dims)
        self.token_dims = token_dims
        g0 = _unfold_out(self.img_size, k, st, p)
        g1 = _unfold_out(g0, 3, 2, 1)
        g2 = _unfold_out(g1, 3, 2, 1)
        self.grids = (g0, g1, g2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.register_buffer('pos_embed', sinusoid_table(g2 * g2 + 1, self.embed_dims),
                             persistent=False)
        dpr = [drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        self.blocks = ModuleList([
            ViTBlock(self.embed_dims, s['num_heads'], mlp_ratio=s['mlp_ratio'],
                     qkv_bias=qkv_bias, drop_path=dpr[i], norm_cfg=dict(type='LN', eps=1e-6))
            for i in range(self.depth)
        ])
        self.norm = nn.LayerNorm(self.embed_dims, eps=1e-6)

    @property
    def patch_resolution(self) -> Tuple[int, int]:
        return (self.grids[2], self.grids[2])

    def embed(self, x: torch.Tensor):
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f'T2TViT expects [B, C, {self.img_size}, {self.img_size}] images, '
                             f'got {tuple(x.shape)}')
        b = x.shape[0]
        g0, g1, g2 = self.grids
        t = self.token1(self.split0(x).transpose(1, 2))
        t = t.transpose(1, 2).reshape(b, self.token_dims, g0, g0)
        t = self.token2(self.split1(t).transpose(1, 2))
        t = t.transpose(1, 2).reshape(b, self.token_dims, g1, g1)
        t = self.project(self.split2(t).transpose(1, 2))
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], dim=1)
        return t + self.pos_embed.to(t.dtype), (g2, g2)

    def forward(self, x):
        t, hw = self.embed(x)
        for blk in self.blocks:
            t = blk(t, hw)
        return (self.norm(t)[:, 0], )

    def tokenizer_flops(self, img_shape=None) -> int:
        g0, g1, g2 = self.grids
        return int(self.token1.flops(g0 * g0) + self.token2.flops(g1 * g1)
                   + g2 * g2 * self.token_dims * 9 * self.embed_dims)

    def static_flops(self, img_shape=None) -> int:
        n = self.grids[2] ** 2 + 1
        return self.tokenizer_flops() + int(sum(blk.flops(n) for blk in self.blocks))
