"""T2T-ViT host (Tokens-to-Token ViT) for the DVT cascade.

Tokenizer: a soft split (:func:`soft_split`: ``nn.Unfold``'s windows as tokens) of the image, a
token transformer, a second soft split (3x3, stride 2), a second token transformer, a third soft
split (3x3, stride 2) and a linear projection to ``embed_dims``; then a class token, a fixed
sinusoidal position table and plain pre-norm blocks (the core's :class:`ViTBlock`). The token
transformers are the Performer kind of T2T-ViT-12/14 (``token_type='performer'``: positive
random features, linear in the tokens) or plain single-head attention (``'transformer'``,
mmpretrain's T2T-ViT_t kind). The first soft split ``(kernel, stride, padding)`` sets the token
grid at a given input size: ``(7, 4, 2)`` gives 14x14 at 224, ``(11, 6, 5)`` 10x10 and
``(14, 8, 3)`` 7x7 (the DVT exits).

The interface mirrors :class:`mmdyn.models.backbones.ViT` where DVT needs it: ``embed(x)`` (tokens
with the class token and position embedding, and the grid), ``blocks``, ``norm``,
``embed_dims``, ``depth``, ``arch_settings``, ``tokenizer_flops(img_shape)``,
``static_flops(img_shape)`` (MACs).
"""
import copy
import math
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule, ModuleList

from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from mmdyn.utils.checkpoint import unwrap_state_dict
from mmdyn.utils.errors import UserValueError
from ..layers.transformer_blocks import ViTBlock, drop_path_rates, layer_cfg_at
from ..utils.dynamic import image_hw

__all__ = ['T2TViT', 'TokenPerformer', 'TokenTransformer', 'sinusoid_table', 'soft_split',
           't2t_to_mmdyn', 'detect_t2t_layout', 'adapt_t2t_state_dict']


def sinusoid_table(n: int, dims: int) -> torch.Tensor:
    """``[1, n, dims]`` fixed sinusoidal position table (sin on even, cos on odd channels)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(dims, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000., 2 * torch.div(i, 2, rounding_mode='floor') / dims)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table[None].float()


def _unfold_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def soft_split(x: torch.Tensor, kernel: int, stride: int, padding: int,
               channels_last: bool = False) -> torch.Tensor:
    """T2T's soft split: the ``kernel x kernel`` windows (zero padding, ``stride``) of a map as
    tokens ``[B, L, C * kernel * kernel]``, each token's entries in ``nn.Unfold``'s order
    (channel, then window row, then window column), tokens row by row: the same values as
    ``nn.Unfold(kernel, stride=stride, padding=padding)(x).transpose(1, 2)``.

    ``x`` is ``[B, C, H, W]``, or ``[B, H, W, C]`` with ``channels_last`` (a token map, no
    transpose needed). The padded map is copied once more, as the tokens, from a strided
    window view, where the unfold writes ``[B, C * k * k, L]`` and a transpose copies it again
    (the token transformers normalise each token, so they need the tokens contiguous): 2-3x
    faster on the CPU at the first split."""
    p = int(padding)
    if channels_last:
        b, h, w, c = x.shape
        win = F.pad(x, (0, 0, p, p, p, p)).unfold(1, kernel, stride).unfold(2, kernel, stride)
    else:
        b, c, h, w = x.shape
        win = F.pad(x, (p, p, p, p)).unfold(2, kernel, stride).unfold(3, kernel, stride)
        win = win.permute(0, 2, 3, 1, 4, 5)
    gh, gw = win.shape[1:3]  # [B, gh, gw, C, k, k]
    return win.reshape(b, gh * gw, c * kernel * kernel)


class TokenPerformer(BaseModule):
    """Token transformer with Performer attention (``in_dims -> dims`` tokens).

    ``y = v + proj(softmax-kernel attention)`` with positive random features
    ``phi(x) = exp(w x - |x|^2 / 2) / sqrt(m)`` (``m = dims * kernel_ratio`` fixed orthogonal
    features), then ``y + MLP(LN(y))``. Two dropouts of rate ``drop_rate`` (default 0.1, the
    public T2T-ViT / DVT code's ``Token_performer``: after the attention projection and at the
    end of the MLP; active in training only).
    """

    def __init__(self, in_dims: int, dims: int, kernel_ratio: float = 0.5, eps: float = 1e-8,
                 drop_rate: float = 0.1):
        super().__init__()
        self.in_dims, self.dims = in_dims, dims
        self.m = int(dims * kernel_ratio)
        self.eps = eps
        self.norm1 = nn.LayerNorm(in_dims)
        self.kqv = nn.Linear(in_dims, 3 * dims)
        self.proj = nn.Linear(dims, dims)
        self.drop = nn.Dropout(drop_rate)
        self.norm2 = nn.LayerNorm(dims)
        # index 3: the dropout keeps the public key names mlp.0 / mlp.2
        self.mlp = nn.Sequential(nn.Linear(dims, dims), nn.GELU(), nn.Linear(dims, dims),
                                 nn.Dropout(drop_rate))
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
        y = v + self.drop(self.proj(y))
        return y + self.mlp(self.norm2(y))

    def flops(self, n: int) -> int:
        d, m = self.dims, self.m
        return n * (self.in_dims * 3 * d + 2 * d * m + m + 2 * d * m + 3 * d * d)


class TokenTransformer(BaseModule):
    """Token transformer with single-head softmax attention (``in_dims -> dims`` tokens).

    The attention logits are scaled by ``qk_scale`` (default ``in_dims ** -0.5``: the input
    width, as the public T2T-ViT_t code and mmpretrain's ``T2TTransformerLayer`` intend)."""

    def __init__(self, in_dims: int, dims: int, qk_scale: Optional[float] = None):
        super().__init__()
        self.in_dims, self.dims = in_dims, dims
        self.scale = float(qk_scale) if qk_scale is not None else in_dims ** -0.5
        self.norm1 = nn.LayerNorm(in_dims)
        self.qkv = nn.Linear(in_dims, 3 * dims, bias=False)
        self.proj = nn.Linear(dims, dims)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = nn.Sequential(nn.Linear(dims, dims), nn.GELU(), nn.Linear(dims, dims))

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        a = ((q * self.scale) @ k.transpose(1, 2)).softmax(-1)
        y = v + self.proj(a @ v)
        return y + self.mlp(self.norm2(y))

    def flops(self, n: int) -> int:
        d = self.dims
        return n * (self.in_dims * 3 * d + 3 * d * d) + 2 * n * n * d


@MODELS.register_module()
@check_arguments
class T2TViT(BaseModule):
    """T2T-ViT backbone (returns the class token after the final norm).

    Args:
        arch (str | dict): ``'t2t-vit-12' | 't2t-vit-14' | 't2t-vit-19'`` or a dict with
            ``embed_dims``, ``depth``, ``num_heads``, ``mlp_ratio``.
        img_size (int): Input side the token grid is computed for. Default 224.
        soft_split (tuple): ``(kernel, stride, padding)`` of the first soft split.
        token_dims (int): Width of the token transformers. Default 64.
        token_type (str): ``'performer'`` (default) or ``'transformer'``.
        token_drop_rate (float): Dropout rate of the Performer token layers (two dropouts each,
            as the public code). Default 0.1; 0 turns them off.
        qkv_bias (bool): Default False (as T2T-ViT).
        qk_scale (float | str, optional): Scale of the blocks' attention logits; default
            ``head_dims ** -0.5`` (what the public T2T-ViT code trains with); ``'embed'`` gives
            ``embed_dims ** -0.5``, the value the public code's model factories set when they
            load its released weights with ``pretrained=True``.
        token_qk_scale (float, optional): Scale of the ``'transformer'`` token layers' logits
            (default ``input_dims ** -0.5``, see :class:`TokenTransformer`).
        norm_eps (float): Epsilon of the blocks' and the final LayerNorms (default 1e-5, torch's
            and mmpretrain's default, which T2T-ViT uses).
        drop_path_rate (float): Default 0.
        layer_cfgs (dict | Sequence[dict], optional): Further :class:`ViTBlock` arguments, for
            every block or one dict per block (e.g. ``dict(ffn_extra_dims=48)``: DVT's feature
            reuse widens each block's FFN input).
        init_cfg (dict | list, optional): ``dict(type='Pretrained', checkpoint=...)`` loads a
            T2T-ViT checkpoint in the public code's, mmpretrain's or mmdyn's layout (converted
            by :func:`t2t_to_mmdyn`; a first soft split of another kernel size is resampled,
            see :func:`adapt_t2t_state_dict`).
    """
    arch_zoo = {
        't2t-vit-7': dict(embed_dims=256, depth=7, num_heads=4, mlp_ratio=2),
        't2t-vit-10': dict(embed_dims=256, depth=10, num_heads=4, mlp_ratio=2),
        't2t-vit-12': dict(embed_dims=256, depth=12, num_heads=4, mlp_ratio=2),
        't2t-vit-14': dict(embed_dims=384, depth=14, num_heads=6, mlp_ratio=3),
        't2t-vit-19': dict(embed_dims=448, depth=19, num_heads=7, mlp_ratio=3),
        't2t-vit-24': dict(embed_dims=512, depth=24, num_heads=8, mlp_ratio=3),
    }

    def __init__(self, arch: Union[str, dict] = 't2t-vit-14', img_size: int = 224,
                 soft_split: Sequence[int] = (7, 4, 2), token_dims: int = 64,
                 token_type: str = 'performer', token_drop_rate: float = 0.1,
                 in_channels: int = 3, qkv_bias: bool = False,
                 qk_scale: Union[float, str, None] = None,
                 token_qk_scale: Optional[float] = None, norm_eps: float = 1e-5,
                 drop_path_rate: float = 0.,
                 layer_cfgs: Union[dict, Sequence[dict], None] = None, init_cfg=None):
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
        self.token_type = token_type
        if token_type == 'performer':
            self.token1 = TokenPerformer(in_channels * k * k, token_dims,
                                         drop_rate=token_drop_rate)
            self.token2 = TokenPerformer(token_dims * 9, token_dims, drop_rate=token_drop_rate)
        else:
            self.token1 = TokenTransformer(in_channels * k * k, token_dims, token_qk_scale)
            self.token2 = TokenTransformer(token_dims * 9, token_dims, token_qk_scale)
        if qk_scale == 'embed':
            qk_scale = self.embed_dims ** -0.5
        elif isinstance(qk_scale, str):
            raise ValueError(f"qk_scale must be a float, None or 'embed', got {qk_scale!r}")
        self.project = nn.Linear(token_dims * 9, self.embed_dims)
        self.token_dims = token_dims
        g0 = _unfold_out(self.img_size, k, st, p)
        g1 = _unfold_out(g0, 3, 2, 1)
        g2 = _unfold_out(g1, 3, 2, 1)
        self.grids = (g0, g1, g2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.register_buffer('pos_embed', sinusoid_table(g2 * g2 + 1, self.embed_dims),
                             persistent=False)
        dpr = drop_path_rates(drop_path_rate, self.depth)
        self.blocks = ModuleList([
            ViTBlock(self.embed_dims, s['num_heads'], mlp_ratio=s['mlp_ratio'],
                     qkv_bias=qkv_bias, qk_scale=qk_scale, drop_path=dpr[i],
                     norm_cfg=dict(type='LN', eps=norm_eps),
                     **layer_cfg_at(layer_cfgs, i, self.depth))
            for i in range(self.depth)
        ])
        self.norm = nn.LayerNorm(self.embed_dims, eps=norm_eps)

    def init_weights(self):
        """The public T2T-ViT code's random init (every ``Linear`` truncated normal std 0.02 with
        zero bias, LayerNorms 1 / 0, the class token truncated normal std 0.02; the Performer
        random features stay fixed), then other ``init_cfg`` initialisers, or a T2T-ViT
        checkpoint through :func:`t2t_to_mmdyn` for ``init_cfg=dict(type='Pretrained',
        checkpoint=...)``."""
        from mmengine.model.weight_init import trunc_normal_
        from ..utils.ckpt_convert import find_pretrained_cfg, load_converted
        from .vit import vit_style_init
        vit_style_init(self.modules())
        trunc_normal_(self.cls_token, std=.02)
        pre = find_pretrained_cfg(self.init_cfg)
        if pre is None:
            if self.init_cfg is not None:
                super().init_weights()
            self._is_init = True
            return
        own = self.state_dict()
        load_converted(self, pre['checkpoint'],
                       lambda c: {k: v for k, v in t2t_to_mmdyn(c).items()
                                  if not k.startswith('head.')},
                       adapt=lambda sd: adapt_t2t_state_dict(sd, own), prefix=pre.get('prefix'))

    @property
    def patch_resolution(self) -> Tuple[int, int]:
        return (self.grids[2], self.grids[2])

    def embed(self, x: torch.Tensor):
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f'T2TViT expects [B, C, {self.img_size}, {self.img_size}] images, '
                             f'got {tuple(x.shape)}')
        b = x.shape[0]
        g0, g1, g2 = self.grids
        t = self.token1(soft_split(x, *self.soft_split))
        # the token maps stay channels-last: [B, g*g, C] is [B, g, g, C]
        d = self.token_dims  # (not -1: an empty batch has no size to infer)
        t = self.token2(soft_split(t.view(b, g0, g0, d), 3, 2, 1, channels_last=True))
        t = self.project(soft_split(t.view(b, g1, g1, d), 3, 2, 1, channels_last=True))
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

    def static_flops(self, img_shape: Optional[Sequence[int]] = None) -> int:
        """MACs for the one input size the model takes, ``img_size`` (also when ``None``)."""
        if img_shape is not None and image_hw(img_shape) != (self.img_size, self.img_size):
            raise UserValueError(f'T2TViT takes {self.img_size}x{self.img_size} images only, '
                             f'got img_shape={tuple(img_shape)}')
        n = self.grids[2] ** 2 + 1
        return self.tokenizer_flops() + int(sum(blk.flops(n) for blk in self.blocks))


# ------------------------------------------------------------------------ checkpoint layouts
def detect_t2t_layout(sd: Dict[str, torch.Tensor]) -> str:
    """``'official'`` (the public T2T-ViT code), ``'mmpretrain'`` (``T2T_ViT``, with or without
    the classifier's ``backbone.`` prefix) or ``'mmdyn'``."""
    keys = [k[len('backbone.'):] if k.startswith('backbone.') else k for k in sd]
    if any(k.startswith('token1.') for k in keys):
        return 'mmdyn'
    if any(k.startswith('encoder.') for k in keys) or \
            any(k.startswith('tokens_to_token.attention1.ln1.') for k in keys):
        return 'mmpretrain'
    if any(k.startswith('tokens_to_token.') for k in keys) and \
            any(k.startswith('blocks.') for k in keys):
        return 'official'
    raise ValueError('unrecognised T2T-ViT checkpoint layout (expected the public code\'s '
                     '"tokens_to_token.attention1..." and "blocks.N..." keys, mmpretrain\'s '
                     '"tokens_to_token..." and "encoder.N..." keys or mmdyn\'s "token1..."); '
                     f'first keys: {list(sd)[:5]}')


_TOKEN_SUBKEYS = {  # token transformer sub-keys -> mmdyn's
    'official': {'attn.qkv.': 'qkv.', 'attn.proj.': 'proj.', 'mlp.fc1.': 'mlp.0.',
                 'mlp.fc2.': 'mlp.2.'},
    'mmpretrain': {'ln1.': 'norm1.', 'ln2.': 'norm2.', 'attn.qkv.': 'qkv.', 'attn.proj.': 'proj.',
                   'ffn.layers.0.0.': 'mlp.0.', 'ffn.layers.1.': 'mlp.2.'},
}
_BLOCK_SUBKEYS = {
    'official': {'mlp.fc1.': 'ffn.fc1.', 'mlp.fc2.': 'ffn.fc2.'},
    'mmpretrain': {'ln1.': 'norm1.', 'ln2.': 'norm2.', 'ffn.layers.0.0.': 'ffn.fc1.',
                   'ffn.layers.1.': 'ffn.fc2.'},
}


def _rename(rest: str, table: Dict[str, str]) -> str:
    for a, b in table.items():
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def t2t_to_mmdyn(ckpt, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Convert a T2T-ViT checkpoint to :class:`T2TViT` keys, plus ``head.weight`` /
    ``head.bias`` (the ImageNet classifier) when the checkpoint has one.

    Layouts: the public T2T-ViT code's (``tokens_to_token.attention{1,2}`` Performer or
    transformer token layers, ``tokens_to_token.project``, ``cls_token``, ``blocks.N`` with a
    fused ``attn.qkv``, ``norm``, ``head``; ``use_ema`` takes ``state_dict_ema`` of a timm
    training checkpoint), mmpretrain's ``T2T_ViT`` (``ln1``/``ln2``, ``ffn.layers``,
    ``encoder.N``; ``head.layers.head`` or ``head.fc`` of its classifier) and mmdyn's own
    (returned with the ``backbone.`` prefix removed). The fixed sinusoidal ``pos_embed`` is
    dropped (mmdyn's is a non-persistent buffer of the same table)."""
    sd = unwrap_state_dict(ckpt, use_ema=use_ema)
    layout = detect_t2t_layout(sd)
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith('backbone.'):
            k = k[len('backbone.'):]
        if k in ('head.layers.head.weight', 'head.layers.head.bias', 'head.fc.weight',
                 'head.fc.bias'):
            out['head.' + k.rsplit('.', 1)[1]] = v
            continue
        if layout == 'mmdyn':
            if not k.startswith(('data_preprocessor.', 'pos_embed')):
                out[k] = v
            continue
        if k == 'pos_embed' or k.startswith(('data_preprocessor.', 'neck.')):
            continue
        if k.startswith('tokens_to_token.attention'):
            i, rest = k[len('tokens_to_token.attention'):].split('.', 1)
            out[f'token{i}.' + _rename(rest, _TOKEN_SUBKEYS[layout])] = v
            continue
        if k.startswith('tokens_to_token.project.'):
            out['project.' + k[len('tokens_to_token.project.'):]] = v
            continue
        pre = 'blocks.' if layout == 'official' else 'encoder.'
        if k.startswith(pre):
            i, rest = k[len(pre):].split('.', 1)
            if rest == 'attn.qkv.weight':
                c = v.shape[0] // 3
                out[f'blocks.{i}.attn.q.weight'] = v[:c]
                out[f'blocks.{i}.attn.kv.weight'] = v[c:]
                continue
            if rest == 'attn.qkv.bias':
                c = v.shape[0] // 3
                out[f'blocks.{i}.attn.q.bias'] = v[:c]
                out[f'blocks.{i}.attn.kv.bias'] = v[c:]
                continue
            out[f'blocks.{i}.' + _rename(rest, _BLOCK_SUBKEYS[layout])] = v
            continue
        if k in ('head.weight', 'head.bias', 'cls_token') or k.startswith('norm.'):
            out[k] = v
            continue
        # anything else (e.g. an unused dist token) is left out
    return out


def _resample_kernel(t: torch.Tensor, channels: int, k_old: int, k_new: int,
                     dim: int) -> torch.Tensor:
    """Resample the ``channels * k_old * k_old`` axis ``dim`` of ``t`` (unfold order: channel,
    row, column) to ``channels * k_new * k_new`` by bilinear interpolation on the kernel grid."""
    t = t.movedim(dim, -1)
    lead = t.shape[:-1]
    g = t.reshape(-1, channels, k_old, k_old).float()
    g = torch.nn.functional.interpolate(g, size=(k_new, k_new), mode='bilinear',
                                        align_corners=True)
    return g.reshape(*lead, channels * k_new * k_new).movedim(-1, dim).to(t.dtype)


def adapt_t2t_state_dict(sd: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor],
                         prefix: str = '', extra_ffn_dims: int = 0
                         ) -> Dict[str, torch.Tensor]:
    """Fit converted T2T-ViT weights (keys under ``prefix``) to a model's shapes ``own``:

    * first soft split of another kernel size (the DVT exits' 14/8/3 and 11/6/5 splits from a
      7/4/2 checkpoint): ``token1``'s input LayerNorm and its ``kqv`` / ``qkv`` input columns
      are resampled bilinearly on the kernel grid, the projection scaled by
      ``(k_old / k_new) ** 2`` so a smooth patch gives about the same response;
    * FFNs that also read ``extra_ffn_dims`` reused features (DVT feature reuse): ``norm2`` is
      extended with weight 1 / bias 0 and ``ffn.fc1`` with zero input columns for them (the
      reused features start with no effect on the FFN; the LayerNorm statistics now include
      them, so the exit is close to, not equal to, the static model).

    Tensors that still differ are left to the loader (skipped with a warning)."""
    sd = OrderedDict(sd)
    w_key = None
    for name in ('token1.kqv.weight', 'token1.qkv.weight'):
        if prefix + name in sd:
            w_key = prefix + name
    if w_key is not None and w_key in own and sd[w_key].shape != own[w_key].shape:
        n_old, n_new = sd[w_key].shape[1], own[w_key].shape[1]
        for c in (3, 1, 4):
            k_old, k_new = math.isqrt(n_old // c), math.isqrt(n_new // c)
            if c * k_old * k_old == n_old and c * k_new * k_new == n_new:
                break
        else:
            c = None
        if c is not None:
            sd[w_key] = _resample_kernel(sd[w_key], c, k_old, k_new, 1) * (k_old / k_new) ** 2
            for leaf in ('weight', 'bias'):
                key = prefix + 'token1.norm1.' + leaf
                if key in sd and sd[key].shape[0] == n_old:
                    sd[key] = _resample_kernel(sd[key], c, k_old, k_new, 0)
    if extra_ffn_dims:
        for key in list(sd):
            if not key.startswith(prefix + 'blocks.') or key not in own:
                continue
            v, want = sd[key], own[key].shape
            if v.shape == want:
                continue
            if key.endswith('norm2.weight') and want[0] == v.shape[0] + extra_ffn_dims:
                sd[key] = torch.cat([v, v.new_ones(extra_ffn_dims)])
            elif key.endswith('norm2.bias') and want[0] == v.shape[0] + extra_ffn_dims:
                sd[key] = torch.cat([v, v.new_zeros(extra_ffn_dims)])
            elif key.endswith('ffn.fc1.weight') and want[1] == v.shape[1] + extra_ffn_dims:
                sd[key] = torch.cat([v, v.new_zeros(v.shape[0], extra_ffn_dims)], dim=1)
    return sd
