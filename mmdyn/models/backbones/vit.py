"""Static ViT / DeiT backbone (the host of the plain-transformer dynamic methods).

Pre-norm blocks, a cls token, learned position embeddings (resized bicubically to other input
sizes). ``out_type='featmap'`` gives NCHW patch-token maps for dense prediction (mmseg style),
``'cls_token'`` the cls token for classification (mmpretrain style), ``'raw'`` the token
sequences. Loads timm/DeiT, mmseg, mmpretrain and mmdyn checkpoints.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_

from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from ..layers.attention import nlc_to_nchw
from ..layers.embed import PatchEmbed, resize_pos_embed
from ..layers.transformer_blocks import ViTBlock, drop_path_rates, layer_cfg_at
from ..utils.checks import check_images, check_out_indices, parse_arch
from ..utils.ckpt_convert import apply_init_cfg, pretrained_init_cfg, vit_to_mmdyn
from ..utils.dynamic import image_hw

__all__ = ['ViT', 'vit_style_init']


def vit_style_init(modules) -> None:
    """The ViT / DeiT family's random initialisation of ``modules``: linear layers truncated
    normal (std 0.02) with zero biases, LayerNorms to ones / zeros."""
    for m in modules:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

_ARCH_KEYS = ('embed_dims', 'depth', 'num_heads', 'mlp_ratio')



@MODELS.register_module()
@check_arguments
class ViT(BaseModule):
    """Vision Transformer / DeiT.

    Args:
        arch (str | dict): ``'vit-t' | 'vit-s' | 'vit-b' | 'deit-t' | 'deit-s' | 'deit-b'`` or a
            dict with ``embed_dims``, ``depth``, ``num_heads``, ``mlp_ratio``.
        img_size (int | tuple): Size the position embedding is laid out for. Default 224.
        patch_size (int): Default 16.
        in_channels (int): Default 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned (-1: last).
        with_cls_token (bool): Prepend a cls token. Default True.
        final_norm (bool): Norm the output of the last block. Default True.
        out_type (str): ``'featmap'`` (NCHW patch tokens), ``'cls_token'`` ([B, C]) or
            ``'raw'`` ([B, N, C], extra tokens first). Default ``'featmap'``.
        interpolate_mode (str): Position-embedding resize mode. Default ``'bicubic'``.
        patch_pad (str | int): Patch-embedding padding; ``'corner'`` pads inputs that are not a
            multiple of the patch size (mmcv's adaptive padding). Default ``'corner'``.
        patch_bias (bool): Bias of the patch projection (timm/DeiT have one). Default True.
        pre_norm (bool): A norm before the first block (CLIP-style). Default False.
        qkv_bias (bool): Default True.
        drop_rate, attn_drop_rate, drop_path_rate (float): Default 0.
        norm_cfg (dict): Default ``dict(type='LN', eps=1e-6)``.
        act_cfg (dict): Default GELU.
        layer_cfgs (dict | Sequence[dict], optional): Further :class:`ViTBlock` arguments, for
            every block or one dict per block (e.g. ``dict(ffn_extra_dims=48)``: DVT's feature
            reuse).
        frozen_stages (int): Freeze the embeddings and blocks ``0..frozen_stages-1``
            (``0``: embeddings only, -1: nothing).
        pretrained (str, optional): Deprecated alias of ``init_cfg`` Pretrained.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=None)``
            loads timm/DeiT, mmseg, mmpretrain or mmdyn checkpoints (layout from the keys).
    """
    arch_zoo = {
        'vit-t': dict(embed_dims=192, depth=12, num_heads=3, mlp_ratio=4),
        'vit-s': dict(embed_dims=384, depth=12, num_heads=6, mlp_ratio=4),
        'vit-b': dict(embed_dims=768, depth=12, num_heads=12, mlp_ratio=4),
        'deit-t': dict(embed_dims=192, depth=12, num_heads=3, mlp_ratio=4),
        'deit-s': dict(embed_dims=384, depth=12, num_heads=6, mlp_ratio=4),
        'deit-b': dict(embed_dims=768, depth=12, num_heads=12, mlp_ratio=4),
    }
    OUT_TYPES = ('featmap', 'cls_token', 'raw')

    def __init__(self,
                 arch: Union[str, dict] = 'vit-b',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 with_cls_token: bool = True,
                 final_norm: bool = True,
                 out_type: str = 'featmap',
                 interpolate_mode: str = 'bicubic',
                 patch_pad: Union[str, int] = 'corner',
                 patch_bias: bool = True,
                 pre_norm: bool = False,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 frozen_stages: int = -1,
                 layer_cfgs: Union[dict, Sequence[dict], None] = None,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        s = self.arch_settings = self._parse_arch(arch)
        self.embed_dims = s['embed_dims']
        self.depth = s['depth']
        self._set_options(in_channels, out_type, with_cls_token, final_norm, interpolate_mode,
                          frozen_stages, img_size, patch_size, out_indices)
        self._build_embedding(patch_pad, patch_bias, drop_rate, norm_cfg if pre_norm else None)
        dpr = drop_path_rates(drop_path_rate, self.depth)
        self.blocks = ModuleList([
            ViTBlock(self.embed_dims, s['num_heads'], mlp_ratio=s['mlp_ratio'], qkv_bias=qkv_bias,
                     drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i],
                     norm_cfg=norm_cfg, act_cfg=act_cfg,
                     **layer_cfg_at(layer_cfgs, i, self.depth)) for i in range(self.depth)
        ])
        self.norm = build_norm_layer(norm_cfg, self.embed_dims)[1] if final_norm \
            else nn.Identity()
        self._freeze()

    def _set_options(self, in_channels: int, out_type: str, with_cls_token: bool,
                     final_norm: bool, interpolate_mode: str, frozen_stages: int, img_size,
                     patch_size: int, out_indices) -> None:
        """The checked constructor options as attributes."""
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got {out_type!r}')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError('out_type="cls_token" needs with_cls_token=True')
        if in_channels < 1:
            raise ValueError(f'in_channels must be positive, got {in_channels}')
        self.in_channels = in_channels
        self.out_type = out_type
        self.with_cls_token = with_cls_token
        self.num_extra_tokens = 1 if with_cls_token else 0
        self.final_norm = final_norm
        self.interpolate_mode = interpolate_mode
        self.frozen_stages = frozen_stages
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.out_indices = check_out_indices(out_indices, self.depth, 'blocks')

    def _build_embedding(self, patch_pad, patch_bias: bool, drop_rate: float,
                         pre_norm_cfg: Optional[dict]) -> None:
        """Patch embedding, class token, position embedding (at ``img_size``), its dropout
        and the norm before the blocks (``pre_norm_cfg``; None: none)."""
        self.patch_embed = PatchEmbed(in_channels=self.in_channels, embed_dims=self.embed_dims,
                                      kernel_size=self.patch_size, stride=self.patch_size,
                                      padding=patch_pad, bias=patch_bias)
        self.patch_resolution = self.patch_embed.out_shape(self.img_size)
        n = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) \
            if self.with_cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n + self.num_extra_tokens, self.embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)
        self.pre_norm = build_norm_layer(pre_norm_cfg, self.embed_dims)[1] \
            if pre_norm_cfg is not None else nn.Identity()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        return parse_arch(cls, arch, _ARCH_KEYS)

    # ------------------------------------------------------------------ init / loading
    def init_weights(self):
        self.random_init()
        apply_init_cfg(self, vit_to_mmdyn, self._adapt_state_dict, super().init_weights)

    def random_init(self) -> None:
        """The random initialisation alone, ``init_cfg`` untouched: what a subclass that
        converts its own checkpoints runs before :func:`apply_init_cfg` with its converter."""
        vit_style_init(self.modules())
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=.02)

    def _adapt_state_dict(self, sd: dict) -> dict:
        """Match the checkpoint's position embedding to this model: add/drop the cls slot,
        resize the grid (``interpolate_mode``)."""
        v = sd.get('pos_embed')
        if v is None or v.shape == self.pos_embed.shape:
            return sd
        n = v.shape[1]
        ckpt_extra = None
        for extra in (1, 0):
            side = int(round(math.sqrt(n - extra)))
            if side * side == n - extra:
                ckpt_extra = extra
                break
        if ckpt_extra is None:
            raise ValueError(f'pos_embed of {n} positions is neither a square grid nor one '
                             'plus a square grid')
        if ckpt_extra and not self.num_extra_tokens:
            v = v[:, 1:]
        elif self.num_extra_tokens and not ckpt_extra:
            v = torch.cat([v.new_zeros(1, 1, v.shape[-1]), v], dim=1)
        sd['pos_embed'] = resize_pos_embed(v, (side, side), self.patch_resolution,
                                           self.interpolate_mode, self.num_extra_tokens)
        return sd

    def _freeze(self):
        if self.frozen_stages < 0:
            return
        mods = [self.patch_embed, self.drop_after_pos, self.pre_norm]
        mods += list(self.blocks[:self.frozen_stages])
        if self.frozen_stages >= self.depth:
            mods.append(self.norm)
        self.pos_embed.requires_grad = False
        if self.cls_token is not None:
            self.cls_token.requires_grad = False
        for m in mods:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze()
        return self

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch tokens with the cls token prepended and position embeddings added."""
        check_images(self, x)
        x, hw = self.patch_embed(x)
        hw = tuple(hw)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = resize_pos_embed(self.pos_embed, self.patch_resolution, hw, self.interpolate_mode,
                               self.num_extra_tokens)
        x = self.drop_after_pos(x + pos)
        return self.pre_norm(x), hw

    def format_output(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        return nlc_to_nchw(x[:, self.num_extra_tokens:], hw)

    def forward(self, x: torch.Tensor) -> tuple:
        x, hw = self.embed(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, hw)
            if i == self.depth - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self.format_output(x, hw))
        return tuple(outs)

    # ------------------------------------------------------------------ FLOPs
    def num_tokens(self, img_shape: Sequence[int]) -> int:
        h, w = self.patch_embed.out_shape(image_hw(img_shape))
        return h * w + self.num_extra_tokens

    def flops_breakdown(self, img_shape: Sequence[int] = (224, 224)) -> Dict[str, int]:
        """MACs of the patch embedding and of each block (``'patch_embed'``, ``'blocks.0'``...).
        All blocks run, whatever ``out_indices`` is."""
        img_shape = image_hw(img_shape)
        n = self.num_tokens(img_shape)
        res = {'patch_embed': self.patch_embed.flops(img_shape)}
        for i, blk in enumerate(self.blocks):
            res[f'blocks.{i}'] = int(blk.flops(n))
        return res

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the whole backbone for an ``(H, W)`` image (see :mod:`mmdyn.analysis.flops`)."""
        return int(sum(self.flops_breakdown(img_shape).values()))
