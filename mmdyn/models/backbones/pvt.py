"""Static PVT v1 and PVTv2 backbones (the hosts the dynamic methods build on).

Both return a list of NCHW maps, one per stage in ``out_indices`` (strides 4, 8, 16, 32), like
mmdet's ``PyramidVisionTransformer(V2)``. They load the official whai362 checkpoints, mmdet's
state dicts and their own through :mod:`mmdyn.models.utils.ckpt_convert`.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_

from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from ..layers.attention import channels_last_convs_, nlc_to_nchw
from ..layers.embed import PatchEmbed, overlap_patch_embed, resize_pos_embed
from ..layers.transformer_blocks import PVTBlock, drop_path_rates
from ..utils.checks import check_out_indices, parse_arch
from ..utils.ckpt_convert import apply_init_cfg, pretrained_init_cfg, pvt_to_mmdyn
from ..utils.min_size import pad_to_min_size, padded_input_shape

__all__ = ['PVT', 'PVTv2', 'PVTStage', 'MMDET_NORMS']

#: mmdet's PVT v1 norms (eps 1e-6 everywhere): ``PVT(..., **MMDET_NORMS)`` for checkpoints
#: trained with mmdet's ``PyramidVisionTransformer``.
MMDET_NORMS = dict(patch_norm_cfg=dict(type='LN', eps=1e-6),
                   sr_norm_cfg=dict(type='LN', eps=1e-6))

_STAGE_KEYS = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios')


def pvt_style_init(modules) -> None:
    """The PVT family's generic initialisation of ``modules``: linear layers truncated normal
    (std 0.02), norms to ones/zeros, convolutions normal with std ``sqrt(2 / fan_out)``
    (biases zero)."""
    for m in modules:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PVTStage(BaseModule):
    """One PVT stage: patch embedding, (v1) absolute position embedding, blocks, optional norm.

    ``forward(x[B, C_in, H, W]) -> (tokens[B, h*w, C], (h, w))``. The dynamic methods can call
    :meth:`embed` and run ``blocks`` themselves.
    """

    def __init__(self, patch_embed: PatchEmbed, blocks: Sequence[nn.Module],
                 pos_shape: Optional[Tuple[int, int]] = None, drop_rate: float = 0.,
                 norm: Optional[nn.Module] = None):
        super().__init__()
        self.patch_embed = patch_embed
        self.embed_dims = patch_embed.embed_dims
        self.pos_shape = pos_shape
        if pos_shape is not None:
            self.pos_embed = nn.Parameter(
                torch.zeros(1, pos_shape[0] * pos_shape[1], self.embed_dims))
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = ModuleList(blocks)
        self.norm = norm if norm is not None else nn.Identity()

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch embedding plus (resized, bilinear) position embedding."""
        x, hw = self.patch_embed(x)
        if self.pos_embed is not None:
            pos = resize_pos_embed(self.pos_embed, self.pos_shape, hw, mode='bilinear')
            x = x + pos
        return self.pos_drop(x), tuple(hw)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x, hw = self.embed(x)
        for blk in self.blocks:
            x = blk(x, hw)
        return self.norm(x), hw

    def flops_breakdown(self, in_hw: Sequence[int], prefix: str = '',
                        num_extra: int = 0) -> Dict[str, int]:
        """MACs of the patch embedding and of every block; ``num_extra`` tokens (a class
        token) are queries and keys too (only without spatial reduction)."""
        out_hw = self.patch_embed.out_shape(in_hw)
        n = out_hw[0] * out_hw[1]
        res = {f'{prefix}patch_embed': self.patch_embed.flops(in_hw)}
        for j, blk in enumerate(self.blocks):
            if num_extra:
                res[f'{prefix}blocks.{j}'] = int(blk.flops(n + num_extra, out_hw,
                                                           num_keys=n + num_extra))
            else:
                res[f'{prefix}blocks.{j}'] = int(blk.flops(n, out_hw))
        return res



@MODELS.register_module()
@check_arguments
class PVT(BaseModule):
    """PVT v1 (`Pyramid Vision Transformer <https://arxiv.org/abs/2102.12122>`_).

    Args:
        arch (str | dict): ``'tiny' | 'small' | 'medium' | 'large'`` or a dict with
            ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``, ``sr_ratios`` (lists of one
            entry per stage).
        in_channels (int): Input channels. Default 3.
        pretrain_img_size (int | tuple): Image size the position embeddings are laid out for
            (resized bilinearly to other inputs). Default 224.
        patch_sizes (Sequence[int]): Patch size (= stride) of each stage's embedding.
        out_indices (Sequence[int]): Stages to output. Default (0, 1, 2, 3).
        qkv_bias (bool): Default True.
        drop_rate, attn_drop_rate (float): Dropout rates. Default 0.
        drop_path_rate (float): Max stochastic depth, linear over blocks. Default 0.1.
        norm_after_stage (bool): A norm after every stage. Default False (mmdet's PVT v1).
        norm_cfg (dict): Norms of the blocks (and of the stage / final norms). Default
            ``dict(type='LN', eps=1e-6)``.
        patch_norm_cfg (dict, optional): Norms of the patch embeddings.
        sr_norm_cfg (dict, optional): Norms after the spatial reduction of keys/values.
            Default of both (``None``) for PVT v1: ``dict(type='LN', eps=1e-5)``, the official
            whai362 / vtpack layout (``nn.LayerNorm(dim)`` there, eps 1e-6 only in the block
            and final norms); for PVTv2: ``norm_cfg``. mmdet's PVT uses eps 1e-6 everywhere:
            give ``**MMDET_NORMS`` (both set to ``norm_cfg``'s eps 1e-6) for mmdet-trained
            checkpoints.
        act_cfg (dict): FFN activation. Default GELU.
        cls_token (bool): The official PVT v1 classifier's class token (v1 only): a token
            ``cls_token + cls_pos_embed`` prepended to the last stage (a query and a key/value of
            its every block, which must have no spatial reduction), a final norm after that
            stage (``stages[-1].norm``, also without ``norm_after_stage``), and the last stage's
            output is then the normalised class token ``[B, C]`` (for a linear head, no neck)
            instead of its map. Default False (dense-prediction hosts).
        final_norm (bool, optional): A norm (``norm_cfg``) after the last stage only
            (``stages[-1].norm``), as vtpack's DPVT classifier has before its global average
            pooling. Default None: only with ``cls_token`` (or ``norm_after_stage``).
        frozen_stages (int): Stages ``0..frozen_stages`` are frozen (eval mode, no grad).
        pretrained (str, optional): Deprecated alias of ``init_cfg=dict(type='Pretrained', ...)``
            (mmseg's segmentors push it in).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=None)``
            loads whai362, mmdet or mmdyn checkpoints (layout detected from the keys).
    """
    arch_zoo = {
        **{k: dict(embed_dims=[64, 128, 320, 512], depths=d, num_heads=[1, 2, 5, 8],
                   mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1])
           for k, d in (('tiny', [2, 2, 2, 2]), ('small', [3, 4, 6, 3]),
                        ('medium', [3, 4, 18, 3]), ('large', [3, 8, 27, 3]))}
    }
    # PVT v1 ingredients (overridden by PVTv2)
    _use_abs_pos_embed = True
    _use_conv_ffn = False
    _overlap = False
    _default_norm_after_stage = False
    # patch-embedding and spatial-reduction norms of the official layout (None: norm_cfg)
    _official_aux_norm_cfg = dict(type='LN', eps=1e-5)

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 patch_sizes: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_after_stage: Optional[bool] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 patch_norm_cfg: Optional[dict] = None,
                 sr_norm_cfg: Optional[dict] = None,
                 cls_token: bool = False,
                 final_norm: Optional[bool] = None,
                 frozen_stages: int = -1,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        self._set_layout(arch, in_channels, out_indices, pretrain_img_size, patch_sizes)
        self.frozen_stages = frozen_stages
        if norm_after_stage is None:
            norm_after_stage = self._default_norm_after_stage
        self.norm_after_stage = norm_after_stage
        if patch_norm_cfg is None:
            patch_norm_cfg = self._official_aux_norm_cfg or norm_cfg
        if sr_norm_cfg is None:
            sr_norm_cfg = self._official_aux_norm_cfg or norm_cfg
        self.norm_cfg, self.patch_norm_cfg, self.sr_norm_cfg = \
            dict(norm_cfg), dict(patch_norm_cfg), dict(sr_norm_cfg)
        block_kw = dict(qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                        norm_cfg=norm_cfg, act_cfg=act_cfg)
        last_norm = cls_token if final_norm is None else final_norm
        self._build_stages(drop_path_rate, block_kw, patch_norm_cfg, drop_rate, last_norm)
        self._add_cls_token(cls_token, self.embed_dims[-1])
        self._freeze_stages()
        channels_last_convs_(self)   # the layout of the maps the convolutions read

    def _set_layout(self, arch, in_channels: int, out_indices, pretrain_img_size,
                    patch_sizes: Sequence[int]) -> None:
        """Checked architecture settings, input channels, output stages, pretraining size
        and patch sizes as attributes."""
        s = self.arch_settings = self._parse_arch(arch)
        self.linear = bool(s.get('linear', False))
        self.num_stages = len(s['embed_dims'])
        self.embed_dims = list(s['embed_dims'])
        self.depths = list(s['depths'])
        if in_channels < 1:
            raise ValueError(f'in_channels must be positive, got {in_channels}')
        self.in_channels = in_channels
        self.out_indices = check_out_indices(out_indices, self.num_stages, 'stages')
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        self.pretrain_img_size = tuple(pretrain_img_size)
        if len(patch_sizes) != self.num_stages:
            raise ValueError(f'patch_sizes {patch_sizes} must have {self.num_stages} entries')
        self.patch_sizes = list(patch_sizes)

    def _build_stages(self, drop_path_rate: float, block_kw: dict, patch_norm_cfg: dict,
                      drop_rate: float, last_norm: bool) -> None:
        """``self.stages``: every stage, drop-path rates rising linearly over all blocks; a
        norm after each stage with ``norm_after_stage``, after the last with ``last_norm``."""
        dpr = drop_path_rates(drop_path_rate, sum(self.depths))
        cur = 0
        self.stages = ModuleList()
        self.stage_strides = []  # input pixels per token side after each stage
        c_in = self.in_channels
        stride = 1
        for i in range(self.num_stages):
            with_norm = self.norm_after_stage or (i == self.num_stages - 1 and last_norm)
            stage, stride = self._build_stage(i, c_in, stride, dpr[cur:cur + self.depths[i]],
                                              block_kw, patch_norm_cfg, drop_rate, with_norm)
            self.stages.append(stage)
            self.stage_strides.append(stride)
            cur += self.depths[i]
            c_in = self.embed_dims[i]

    def _build_stage(self, i: int, c_in: int, stride: int, dpr: Sequence[float],
                     block_kw: dict, patch_norm_cfg: dict, drop_rate: float,
                     with_norm: bool) -> Tuple['PVTStage', int]:
        """Stage ``i`` (patch embedding, blocks, PVT v1's position embedding, the optional
        norm) and the total stride after it (``stride``: before it)."""
        c, s = self.embed_dims[i], self.arch_settings
        if self._overlap:
            st_i = 4 if i == 0 else 2
            pe = overlap_patch_embed(c_in, c, kernel_size=self.patch_sizes[i], stride=st_i,
                                     norm_cfg=patch_norm_cfg)
            stride *= st_i
        else:
            pe = PatchEmbed(in_channels=c_in, embed_dims=c, kernel_size=self.patch_sizes[i],
                            stride=self.patch_sizes[i], padding=0,
                            norm_cfg=patch_norm_cfg)
            stride *= self.patch_sizes[i]
        blocks = [
            self.build_block(c, s['num_heads'][i], mlp_ratio=s['mlp_ratios'][i],
                             sr_ratio=s['sr_ratios'][i], drop_path=dpr[j], **block_kw)
            for j in range(self.depths[i])
        ]
        pos_shape = None
        if self._use_abs_pos_embed:
            pos_shape = (self.pretrain_img_size[0] // stride,
                         self.pretrain_img_size[1] // stride)
        norm = build_norm_layer(block_kw['norm_cfg'], c)[1] if with_norm else None
        return PVTStage(pe, blocks, pos_shape, drop_rate, norm), stride

    def _add_cls_token(self, cls_token: bool, dims: int) -> None:
        """The class token and its position (PVT v1 with no reduction in the last stage)."""
        self.with_cls_token = bool(cls_token)
        self.num_extra_tokens = 1 if cls_token else 0
        if cls_token:
            if not self._use_abs_pos_embed:
                raise ValueError(f'{type(self).__name__}: cls_token is a PVT v1 option')
            if self.stages[-1].blocks[0].attn.has_reduction:
                raise ValueError('cls_token needs a last stage without spatial reduction '
                                 f'(sr_ratios[-1] = 1), got {self.arch_settings["sr_ratios"]}')
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dims))
            self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, dims))

    def build_block(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                    **kwargs) -> nn.Module:
        """One transformer block of a stage (called by ``__init__``; a host with another block,
        e.g. DPVT's deformable one, overrides it). ``kwargs``: ``qkv_bias``, ``drop``,
        ``attn_drop``, ``drop_path``, ``norm_cfg``, ``act_cfg``."""
        return PVTBlock(embed_dims, num_heads, mlp_ratio=mlp_ratio, sr_ratio=sr_ratio,
                        linear=self.linear, use_conv_ffn=self._use_conv_ffn,
                        sr_norm_cfg=self.sr_norm_cfg, **kwargs)

    # ------------------------------------------------------------------ config
    @classmethod
    def _parse_arch(cls, arch) -> dict:
        settings = parse_arch(cls, arch, _STAGE_KEYS, optional=('linear', ))
        if not isinstance(arch, str):
            lens = {k: len(arch[k]) for k in _STAGE_KEYS}
            if len(set(lens.values())) != 1:
                raise ValueError(f'{cls.__name__}: arch lists differ in length: {lens}')
        return settings

    # ------------------------------------------------------------------ init / loading
    def init_weights(self):
        self.random_init()
        apply_init_cfg(self, pvt_to_mmdyn, self._adapt_state_dict, super().init_weights)

    def random_init(self) -> None:
        """The random initialisation alone, ``init_cfg`` untouched: what a subclass that
        converts its own checkpoints runs before :func:`apply_init_cfg` with its converter."""
        pvt_style_init(self.modules())
        for st in self.stages:
            if st.pos_embed is not None:
                trunc_normal_(st.pos_embed, std=.02)
        self._init_cls_token()

    def _init_cls_token(self):
        if self.with_cls_token:  # as the official code: trunc-normal 0.02 (its position too)
            trunc_normal_(self.cls_token, std=.02)
            trunc_normal_(self.cls_pos_embed, std=.02)

    def embed_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token (with its position embedding and the stage's position
        dropout) to the last stage's embedded ``[B, h*w, C]`` tokens."""
        cls = self.stages[-1].pos_drop(self.cls_token + self.cls_pos_embed)
        return torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], 1)

    def _adapt_state_dict(self, sd: dict) -> dict:
        """Resize position embeddings of other grids (bilinear) to this model's; drop (with a
        note) the parts only a classifier has when this model has none: the class token and
        its position, the final norm after the last stage."""
        dropped = []
        if not self.with_cls_token:
            dropped += [k for k in ('cls_token', 'cls_pos_embed') if sd.pop(k, None) is not None]
        last = f'stages.{self.num_stages - 1}.norm.'
        if isinstance(self.stages[-1].norm, nn.Identity):
            dropped += [k for k in list(sd) if k.startswith(last) and sd.pop(k) is not None]
        if dropped:
            from mmengine.logging import print_log
            print_log(f'{type(self).__name__}: classifier-only tensors not used by this model '
                      f'(no class token / final norm): {dropped}', 'current')
        for i, st in enumerate(self.stages):
            k = f'stages.{i}.pos_embed'
            if st.pos_embed is None or k not in sd:
                continue
            v = sd[k]
            if v.shape != st.pos_embed.shape:
                n = v.shape[1]
                side = int(round(math.sqrt(n)))
                if side * side != n:
                    raise ValueError(f'{k}: {n} positions do not form a square grid')
                sd[k] = resize_pos_embed(v, (side, side), st.pos_shape, mode='bilinear')
        return sd

    def _freeze_stages(self):
        for i in range(min(self.frozen_stages + 1, self.num_stages)):
            st = self.stages[i]
            st.eval()
            for p in st.parameters():
                p.requires_grad = False
        if getattr(self, 'with_cls_token', False) and self.frozen_stages >= self.num_stages - 1:
            self.cls_token.requires_grad = False
            self.cls_pos_embed.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """NCHW maps of the stages in ``out_indices``, as a tuple (what mmdet/mmseg necks and
        mmpretrain's ``GlobalAveragePooling`` all accept)."""
        x = pad_to_min_size(self, x)  # small / thin images: up to the size every stage takes
        outs = []
        for i, st in enumerate(self.stages):
            if self.with_cls_token and i == self.num_stages - 1:
                tokens, hw = st.embed(x)
                tokens = self.embed_cls(tokens)
                for blk in st.blocks:
                    tokens = blk(tokens, hw)
                tokens = st.norm(tokens)
                if i in self.out_indices:
                    outs.append(tokens[:, 0])
                continue
            tokens, hw = st(x)
            x = nlc_to_nchw(tokens, hw)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    # ------------------------------------------------------------------ FLOPs
    def stage_shapes(self, img_shape: Sequence[int]) -> List[Tuple[int, int]]:
        """Token grid of every stage for an ``(H, W)`` image."""
        shapes, hw = [], padded_input_shape(self, img_shape)
        for st in self.stages:
            hw = st.patch_embed.out_shape(hw)
            shapes.append(hw)
        return shapes

    def flops_breakdown(self, img_shape: Sequence[int] = (224, 224)) -> Dict[str, int]:
        """MACs per patch embedding and block, keyed by module name
        (``'stages.0.patch_embed'``, ``'stages.0.blocks.0'``...)."""
        res, hw = {}, padded_input_shape(self, img_shape)
        for i, st in enumerate(self.stages):
            extra = self.num_extra_tokens if i == self.num_stages - 1 else 0
            res.update(st.flops_breakdown(hw, prefix=f'stages.{i}.', num_extra=extra))
            hw = st.patch_embed.out_shape(hw)
        return res

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the whole backbone for an ``(H, W)`` image (see :mod:`mmdyn.analysis.flops`)."""
        return int(sum(self.flops_breakdown(img_shape).values()))


@MODELS.register_module()
@check_arguments
class PVTv2(PVT):
    """PVTv2 (`PVT v2: Improved Baselines <https://arxiv.org/abs/2106.13797>`_).

    Overlapping patch embeddings (7x7/4, 3x3/2), no position embedding, MixFFN, a norm after
    every stage. ``arch``: ``'b0' .. 'b5'``, ``'b2-li'`` (linear SR) or a dict as for
    :class:`PVT` (optionally with ``linear=True``); ``linear`` (bool, optional) overrides the
    arch's. Other args as :class:`PVT`; ``patch_sizes=(7, 3, 3, 3)`` are the kernel sizes
    (strides 4, 2, 2, 2, padding ``k // 2``).
    """
    _b = dict(embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4],
              sr_ratios=[8, 4, 2, 1])
    arch_zoo = {
        'b0': dict(_b, embed_dims=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
        'b1': dict(_b, depths=[2, 2, 2, 2]),
        'b2': dict(_b, depths=[3, 4, 6, 3]),
        'b2-li': dict(_b, depths=[3, 4, 6, 3], linear=True),
        'b3': dict(_b, depths=[3, 4, 18, 3]),
        'b4': dict(_b, depths=[3, 8, 27, 3]),
        'b5': dict(_b, depths=[3, 6, 40, 3], mlp_ratios=[4, 4, 4, 4]),
    }
    del _b
    _use_abs_pos_embed = False
    _use_conv_ffn = True
    _overlap = True
    _default_norm_after_stage = True
    _official_aux_norm_cfg = None  # unchanged: norm_cfg everywhere

    def __init__(self, arch: Union[str, dict] = 'b2', patch_sizes: Sequence[int] = (7, 3, 3, 3),
                 linear: Optional[bool] = None, **kwargs):
        arch = self._parse_arch(arch)
        if linear is not None:
            arch['linear'] = bool(linear)
        super().__init__(arch=arch, patch_sizes=patch_sizes, **kwargs)

