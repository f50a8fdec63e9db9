"""DVT: a cascade of transformers with growing token counts and real early exit.

"Not All Images are Worth 16x16 Words" (Wang et al., NeurIPS 2021), as an mmpretrain classifier.

The model is ``K`` independent transformers ("exits"), each with its own weights and its own
classification head, run in sequence on the same image with more tokens each time (default
7x7, 10x10 and 14x14 at 224). An exit's token grid comes from its host's tokenizer:

* ``host='vit'`` (default): the core's :class:`mmdyn.models.backbones.ViT` (DeiT-S); the input
  is resized to ``input_size`` (default ``grid * patch_size``) pixels so that the patch
  embedding gives a ``grid x grid`` map (no resize when the input already has that size). The
  DeiT configs give the public code's tokenizers per exit: 224 px with patch 32 (7x7), 23 and
  padding 3 (10x10), 16 (14x14);
* ``host='t2t'``: :class:`mmdyn.models.backbones.T2TViT` (T2T-ViT-12/14); the input is resized
  to ``img_size`` (224) and the first soft split sets the grid (14/8/3 -> 7x7, 11/6/5 -> 10x10,
  7/4/2 -> 14x14, the public code's settings).

Reuse between consecutive exits (each switchable):

* **feature reuse** (Eq. 4-5): the previous exit's final image tokens (before its final norm)
  go, in every block ``l`` of the downstream exit, through ``LN -> Linear(C, 128) -> GELU ->
  Linear(128, 48)`` (a separate module per block; ``feature_reuse_dims`` changes the widths
  128 / 48, the paper's for 384-wide exits; the modules of an exit run together, see
  :meth:`DVTExit.reused_features`), are resized to the new grid (nearest to twice
  the old grid, then adaptive average pooling, as the public code does for 7->10 and 10->14) and
  concatenated to the block's FFN input; the class token gets zeros. The host builds its
  blocks with ``layer_cfgs=dict(ffn_extra_dims=48)`` (the core block's extension point: its
  second norm and first FFN linear take ``C + 48`` channels, the residual stays ``C`` wide, and
  its ``flops`` count the wider input); the exit passes the features as ``ffn_extra``.
* **relationship reuse** (Eq. 8-9): the previous exit's pre-softmax attention logits of all its
  ``L`` layers, ``[B, heads * L, n, n]``, go through a per-position MLP
  ``heads*L -> 3*heads*L -> heads*L`` (GELU), then the 2-D aware up-sampling of Fig. 5 (the
  spatial part of the key axis, then of the query axis, is resized on the token grid; the class
  token's row and column are carried unchanged), are split into ``L`` chunks of ``heads`` and
  chunk ``l`` is added to layer ``l``'s logits (the core block's ``attn_bias``; an exit whose
  relations are reused asks its blocks for their logits with ``return_logits``; on the CPU the
  up-sampling runs a few layers' chunks at a time, :meth:`DVTExit.relation_biases`). Needs the
  same depth and heads in both exits.

Modes:

* ``loss``: every exit runs on the whole batch; loss = sum of the exits' cross-entropies
  (Eq. 1), reported as ``loss_exit{k}``.
* ``predict`` (eval): real early exit. An image whose top softmax probability at exit ``k``
  reaches ``thresholds[k]`` stops there (a threshold of 1.0: nobody stops, see
  :func:`exits_at`); only the remaining images are gathered and run through
  the next transformer (with their reuse inputs). The last exit takes everything left. Each
  sample's ``pred_score``/``pred_label`` come from its exit; ``metainfo['exit_index']`` is the
  0-based exit. Per image realised FLOPs (the cumulative FLOPs of the exits it ran) are recorded
  with :meth:`record_dynamic` (``exit_ratio`` = exited before the last exit, ``exit{k}_ratio``
  one-hot per exit) so ``mmdyn.ComplexityMetric`` reports them.
* ``force_full`` (:func:`mmdyn.models.utils.dynamic.full_compute`): every image runs every
  exit, the prediction is the last exit's, and ``metainfo['exit_scores']`` holds the softmax of
  every exit (what the threshold tool needs).
* ``tensor``: in training or under ``force_full`` the logits of every exit on the whole batch
  (a tuple; also :meth:`run_all`); in eval the early-exit logits ``[B, classes]`` (what
  ``get_flops.py`` runs, so its realised FLOPs are the early-exit ones).

FLOPs are MACs (one multiply-add), as everywhere in mmdyn; per exit: patch embedding + blocks
(the core's analytic counts, the wider FFN input included) + head + the reuse modules (reuse
MLPs, the grid resizes of the reused maps as two small matrix products per map; norms are not
counted), all through :mod:`mmdyn.analysis.flops`.
"""
import json
import os.path as osp
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import initialize, trunc_normal_
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.structures import DataSample

from mmdyn.analysis import flops as fl
from mmdyn.registry import MODELS
from mmdyn.utils.errors import UserValueError
from ..backbones.t2t_vit import T2TViT, adapt_t2t_state_dict, detect_t2t_layout, t2t_to_mmdyn
from ..backbones.vit import ViT
from ..layers.ffn import MLP
from ..layers.shape_constants import shape_constant
from ..utils.ckpt_convert import _vit_timm, find_pretrained_cfg, load_converted
from ..utils.dynamic import DynamicModuleMixin, image_hw

__all__ = ['DVTClassifier', 'DVTExit', 'resize_grid', 'resize_matrix', 'resize_index',
           'relation_index', 'upsample_relation', 'exits_at',
           'MAX_EXIT_THRESHOLD', 'dvt_official_to_mmdyn', 't2t_to_dvt_exits', 'is_single_t2t',
           'is_official_dvt', 'official_exit_names', 'official_thresholds']

#: initialisation of every exit's head unless ``head_init_cfg`` is given (the public code's)
HEAD_INIT_CFG = dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)
FEATURE_REUSE_HIDDEN = 128
FEATURE_REUSE_DIMS = 48
HOSTS = ('vit', 't2t')
#: the largest float32 below 1: the highest threshold that still lets images exit (those whose
#: top softmax probability is 1.0 or this value); 1.0 itself means "no early exit"
MAX_EXIT_THRESHOLD = float(torch.nextafter(torch.tensor(1.), torch.tensor(0.)))
#: the most bytes of up-sampled relations made at once (:meth:`DVTExit.relation_biases`)
RELATION_CHUNK_BYTES = 4 << 20
#: first soft split of the T2T tokenizer per token grid at 224 (the public DVT code's)
T2T_SOFT_SPLITS = {7: (14, 8, 3), 10: (11, 6, 5), 14: (7, 4, 2)}


@shape_constant
def resize_matrix(n: int, new_n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[new_n, n]`` matrix of :func:`resize_grid` along one axis: nearest up-sampling to
    ``2 n`` then adaptive average pooling to ``new_n`` (both act on each axis separately).
    Cached per size, dtype and device (:mod:`~mmdyn.models.layers.shape_constants`: do not
    modify in place)."""
    eye = torch.eye(n, dtype=dtype, device=device).reshape(n, 1, n)
    up = F.interpolate(eye, size=2 * n, mode='nearest')
    return F.adaptive_avg_pool1d(up, new_n).reshape(n, new_n).t().contiguous()


@shape_constant
def resize_index(n: int, new_n: int, device=None) -> torch.Tensor:
    """``Long[new_n]``: the input entry each output entry copies, for an axis whose resize is
    a copy (:func:`mmdyn.analysis.flops.resize_is_copy`). Cached per size and device."""
    return resize_matrix(n, new_n).argmax(dim=1).to(device)


def resize_grid(x: torch.Tensor, new_hw: Sequence[int]) -> torch.Tensor:
    """Resize a ``[..., h, w]`` map to ``new_hw``: nearest up-sampling to twice the old grid,
    then adaptive average pooling (the public code's 7->14->10 and 10->20->14). Both steps are
    separable, so each axis is one small matrix product (:func:`resize_matrix`), which is much
    cheaper than materialising the doubled map for the large relation tensors; an axis whose
    resize copies entries (7->14: nearest x2 only) is an index instead (no arithmetic; what
    :func:`~mmdyn.analysis.flops.grid_resize_flops` counts)."""
    h, w = x.shape[-2:]
    H, W = (int(v) for v in new_hw)
    if (h, w) == (H, W):
        return x
    if fl.resize_is_copy(h, H):
        x = x.index_select(-2, resize_index(h, H, x.device))
    else:
        x = torch.matmul(resize_matrix(h, H, x.dtype, x.device), x)
    if fl.resize_is_copy(w, W):
        return x.index_select(-1, resize_index(w, W, x.device))
    return torch.matmul(x, resize_matrix(w, W, x.dtype, x.device).t())


@shape_constant
def relation_index(h: int, w: int, H: int, W: int, device=None) -> torch.Tensor:
    """``Long[1 + H*W]``: the old token (class token first) each new token copies, when the
    resize of both grid axes is a copy (:func:`resize_index`). Cached per size and device."""
    rows, cols = resize_index(h, H), resize_index(w, W)
    spatial = (rows[:, None] * w + cols[None, :]).flatten() + 1
    return torch.cat([spatial.new_zeros(1), spatial]).to(device)


def upsample_relation(rel: torch.Tensor, old_hw: Sequence[int],
                      new_hw: Sequence[int]) -> torch.Tensor:
    """2-D aware up-sampling (Fig. 5) of attention logits ``[B, M, 1 + h*w, 1 + h*w]`` (class
    token first) to ``[B, M, 1 + H*W, 1 + H*W]``: the spatial keys of every query row are
    resized on the grid, then the spatial queries of every key column; the class token's row and
    column are carried over (resized along the other axis only)."""
    b, m, n, n2 = rel.shape
    h, w = old_hw
    if n != n2 or n != 1 + h * w:
        raise ValueError(f'relation of shape {tuple(rel.shape)} is not over 1 + {h}x{w} tokens')
    H, W = new_hw
    if fl.resize_is_copy(h, H) and fl.resize_is_copy(w, W):
        # a copy on both axes (7x7 -> 14x14): every new token copies one old token, the class
        # token itself; two indexes over the whole token axes, no arithmetic
        idx = relation_index(h, w, H, W, rel.device)
        return rel.index_select(3, idx).index_select(2, idx)

    def keys(t):  # resize the last axis
        rows = t.shape[2]
        sp = t[..., 1:].reshape(b, m * rows, h, w)
        sp = resize_grid(sp, (H, W)).reshape(b, m, rows, H * W)
        return torch.cat([t[..., :1], sp], dim=-1)

    rel = keys(rel)  # [B, M, n, 1+HW]
    rel = keys(rel.transpose(2, 3)).transpose(2, 3)  # [B, M, 1+HW, 1+HW]
    return rel


def exits_at(conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which images stop at an exit: ``conf >= threshold`` for a threshold below 1; a threshold
    of 1 (or more) means "nobody stops here", even an image whose top softmax probability is
    exactly 1.0 in float (saturated softmax). Thresholds from data that would be 1.0 are written
    as the largest float32 below 1 (:data:`MAX_EXIT_THRESHOLD`) by the threshold tool."""
    if threshold >= 1.:
        return torch.zeros_like(conf, dtype=torch.bool)
    return conf >= threshold


class FeatureReuse(MLP):
    """``LN -> Linear(C, hidden) -> GELU -> Linear(hidden, out_dims)`` of one downstream block
    (default 128 / 48): the core :class:`~mmdyn.models.layers.MLP` (``in_dims -> hidden ->
    out_dims``) after a LayerNorm."""

    def __init__(self, in_dims: int, hidden: int = FEATURE_REUSE_HIDDEN,
                 out_dims: int = FEATURE_REUSE_DIMS, eps: float = 1e-6):
        super().__init__(out_dims, hidden, in_dims=in_dims)
        self.out_dims = out_dims
        self.norm = nn.LayerNorm(in_dims, eps=eps)

    def forward(self, x):
        return super().forward(self.norm(x))


class RelationReuse(MLP):
    """Per-position MLP over the ``heads * L`` relation channels (1x1 convs in the paper): the
    core :class:`~mmdyn.models.layers.MLP` ``channels -> ratio * channels -> channels`` on the
    channels-last maps.

    Initialised as PyTorch initialises a layer (``reset_parameters``: weights uniform in
    ``+-1/sqrt(fan_in)`` through Kaiming-uniform with ``a = sqrt(5)``, biases uniform in
    ``+-1/sqrt(fan_in)``), which is what the public code's 1x1 ``Conv2d`` layers get (its
    truncated-normal init touches ``Linear`` layers only); a 1x1 conv and a ``Linear`` of the
    same fan-in draw from the same distributions."""

    def __init__(self, channels: int, ratio: int = 3):
        super().__init__(channels, ratio * channels)
        self.channels = channels

    def forward(self, rel):  # [B, M, n, n]
        return super().forward(rel.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _with_ffn_extra(layer_cfgs, extra: int):
    """A host's ``layer_cfgs`` (None, one dict or one per block) with ``ffn_extra_dims``."""
    if layer_cfgs is None or isinstance(layer_cfgs, dict):
        return dict(layer_cfgs or {}, ffn_extra_dims=extra)
    return [dict(c, ffn_extra_dims=extra) for c in layer_cfgs]


class DVTExit(BaseModule):
    """One transformer of the cascade: a core :class:`ViT` at ``grid x grid`` tokens, its head,
    and the modules that reuse the previous exit.

    Args:
        arch (str | dict): ViT arch of this exit.
        grid (int): Token grid side.
        patch_size (int): Patch size of the tokenizer; the input is resized to
            ``grid * patch_size``.
        num_classes (int): Classes of the head.
        prev (DVTExit, optional): The previous exit (for reuse).
        feature_reuse, relation_reuse (bool): Reuse the previous exit.
        backbone_cfg (dict): Further host arguments (drop_path_rate, qkv_bias, ...).
        host (str): ``'vit'`` (core ViT/DeiT; the input is resized to ``grid * patch_size``) or
            ``'t2t'`` (:class:`T2TViT`; the input is resized to ``img_size`` and the first
            soft split ``soft_split`` sets the grid).
        img_size (int): T2T input side. Default 224.
        soft_split (tuple, optional): T2T first soft split; default from the grid
            (:data:`T2T_SOFT_SPLITS`).
        input_size (int, optional): ViT host: input side (default ``grid * patch_size``), e.g.
            224 with ``patch_size=32`` for 7x7 or ``patch_size=23, patch_pad=3`` for 10x10 (the
            public code's DeiT tokenizers).
        patch_pad (int | str, optional): ViT host: patch-embedding padding.
        export_relations (bool): The next exit reuses this exit's relations: the forward also
            returns every block's attention logits in its state.
        feature_reuse_dims (tuple): ``(hidden, out)`` widths of the feature-reuse MLPs.
            Default ``(128, 48)`` (the paper's, for 384-wide exits).
    """

    def __init__(self, arch, grid: int, patch_size: int, num_classes: int,
                 prev: Optional['DVTExit'] = None, feature_reuse: bool = False,
                 relation_reuse: bool = False, backbone_cfg: Optional[dict] = None,
                 head_init_cfg: Optional[dict] = None, loss: Optional[dict] = None,
                 host: str = 'vit', img_size: int = 224, soft_split=None,
                 input_size: Optional[int] = None, patch_pad=None,
                 export_relations: bool = False,
                 feature_reuse_dims: Sequence[int] = (FEATURE_REUSE_HIDDEN, FEATURE_REUSE_DIMS)):
        super().__init__()
        if host not in HOSTS:
            raise ValueError(f'host must be one of {HOSTS}, got {host!r}')
        self.host = host
        self.grid = int(grid)
        self.patch_size = int(patch_size)
        cfg = dict(backbone_cfg or {})
        hidden, self.feature_dims = (int(v) for v in feature_reuse_dims)
        if feature_reuse:
            # the host's extension point: each block's FFN also reads the reused features
            cfg['layer_cfgs'] = _with_ffn_extra(cfg.get('layer_cfgs'), self.feature_dims)
        self.backbone, self.input_size = self._build_host(arch, cfg, img_size, soft_split,
                                                          input_size, patch_pad)
        self.embed_dims = self.backbone.embed_dims
        self.depth = self.backbone.depth
        self.num_heads = self.backbone.arch_settings['num_heads']
        # the public code initialises its heads like every Linear: truncated normal std 0.02,
        # zero bias (mmpretrain's LinearClsHead default would be normal std 0.01)
        head_kw = dict(init_cfg=dict(HEAD_INIT_CFG) if head_init_cfg is None else head_init_cfg)
        loss = dict(loss or dict(type='CrossEntropyLoss', loss_weight=1.0))
        self.head = LinearClsHead(num_classes=num_classes, in_channels=self.embed_dims,
                                  loss=loss, **head_kw)
        self.feature_reuse = bool(feature_reuse)
        self.relation_reuse = bool(relation_reuse)
        self.export_relations = bool(export_relations)
        if (feature_reuse or relation_reuse) and prev is None:
            raise ValueError('the first exit has no previous exit to reuse')
        self.prev_grid = prev.grid if prev is not None else None
        if self.feature_reuse:
            eps = self.backbone.blocks[0].norm2.eps
            self.feature_modules = ModuleList(
                [FeatureReuse(prev.embed_dims, hidden, self.feature_dims, eps=eps)
                 for _ in range(self.depth)])
        if self.relation_reuse:
            if prev.depth != self.depth or prev.num_heads != self.num_heads:
                raise ValueError(
                    'relationship reuse needs the same depth and heads in consecutive exits; '
                    f'got depth {prev.depth} / heads {prev.num_heads} (exit at {prev.grid}x'
                    f'{prev.grid}) and depth {self.depth} / heads {self.num_heads} (exit at '
                    f'{self.grid}x{self.grid})')
            if not prev.export_relations:
                raise ValueError('relationship reuse needs the previous exit built with '
                                 'export_relations=True')
            self.relation_module = RelationReuse(self.num_heads * self.depth)

    def _build_host(self, arch, cfg: dict, img_size: int, soft_split, input_size,
                    patch_pad):
        """The exit's host transformer at ``grid x grid`` tokens and the input side it reads."""
        host = self.host
        if host == 'vit':
            size = int(input_size or self.grid * self.patch_size)
            cfg.update(arch=arch, img_size=size, patch_size=self.patch_size,
                       out_type='cls_token', with_cls_token=True, final_norm=True)
            if patch_pad is not None:
                cfg['patch_pad'] = patch_pad
            backbone = ViT(**cfg)
            if tuple(backbone.patch_resolution) != (self.grid, self.grid):
                r = backbone.patch_resolution
                raise ValueError(f'patch {self.patch_size} (padding {cfg.get("patch_pad")}) '
                                 f'gives a {r[0]}x{r[1]} grid at {size} px, not '
                                 f'{self.grid}x{self.grid}')
        else:
            size = int(img_size)
            if soft_split is None:
                if self.grid not in T2T_SOFT_SPLITS or size != 224:
                    raise ValueError(f'give soft_split for a T2T exit of grid {self.grid} at '
                                     f'{size} px')
                soft_split = T2T_SOFT_SPLITS[self.grid]
            cfg.update(arch=arch, img_size=size, soft_split=soft_split)
            backbone = T2TViT(**cfg)
            if backbone.grids[2] != self.grid:
                raise ValueError(f'T2T soft split {tuple(soft_split)} gives a '
                                 f'{backbone.grids[2]}x{backbone.grids[2]} grid at '
                                 f'{size} px, not {self.grid}x{self.grid}')
        return backbone, size

    def init_weights(self):
        """The public code's init of the reuse modules: the feature-reuse MLPs' ``Linear``
        layers truncated normal std 0.02 with zero bias (LayerNorm 1 / 0), the relation MLP
        PyTorch's default (see :class:`RelationReuse`); host and head init their own parts."""
        super().init_weights()
        for m in getattr(self, 'feature_modules', nn.ModuleList()).modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        rel = getattr(self, 'relation_module', None)
        if rel is not None:
            rel.fc1.reset_parameters()
            rel.fc2.reset_parameters()

    # ------------------------------------------------------------------ forward
    def prepare_input(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4:  # before the resize, whose own error would not say what is wrong
            raise UserValueError(f'DVT expects [B, C, H, W] images, got {tuple(img.shape)}')
        if tuple(img.shape[-2:]) == (self.input_size, self.input_size):
            return img
        return F.interpolate(img, size=(self.input_size, self.input_size), mode='bilinear',
                             align_corners=False, antialias=True)

    def forward(self, img: torch.Tensor, prev_state: Optional[dict] = None
                ) -> Tuple[torch.Tensor, dict]:
        """Logits ``[B, classes]`` and the state the next exit reuses."""
        bb = self.backbone
        x, hw = bb.embed(self.prepare_input(img))
        feats = bias = None
        if self.feature_reuse or self.relation_reuse:
            if prev_state is None:
                raise ValueError('this exit reuses the previous one; give its state')
        if self.feature_reuse:
            # [B, P, C'] image tokens of the previous exit, before its final norm
            feats = self.reused_features(prev_state['tokens'], hw).unbind(0)
        if self.relation_reuse:
            bias = self.relation_biases(self.relation_module(prev_state['relations']), hw)
        need_logits = self.export_relations
        relations = []
        for i, blk in enumerate(bb.blocks):
            x = blk(x, hw, attn_bias=None if bias is None else next(bias),
                    ffn_extra=None if feats is None else feats[i], return_logits=need_logits)
            if need_logits:
                x, logits = x
                relations.append(logits)
        state = dict(tokens=x[:, 1:])
        if need_logits:
            state['relations'] = torch.cat(relations, dim=1)
        x = bb.norm(x)
        logits = self.head((x[:, 0], ))
        return logits, state

    def relation_biases(self, rel: torch.Tensor, hw: Sequence[int]) -> Iterator[torch.Tensor]:
        """The blocks' attention biases in turn, ``[B, heads, 1 + H*W, 1 + H*W]`` each: the
        relation MLP's output ``rel`` (``[B, heads * L, n, n]``) up-sampled to this exit's
        grid (:func:`upsample_relation`) a few blocks at a time (as many as fit in
        :data:`RELATION_CHUNK_BYTES`, at least one), each part just before its blocks read it.
        The whole up-sampled tensor would be 60 MB at batch 8 (7x7 -> 14x14, 12 blocks of 4
        heads), written once and read back from memory; parts this size stay in cache for the
        attention that reads them (3x faster at batch 8, the same values). On other devices
        than the CPU all blocks' at once, as before (fewer kernel launches, which small
        batches wait for on a GPU; parts are not measured there)."""
        heads = self.num_heads
        side = 1 + int(hw[0]) * int(hw[1])
        block_bytes = max(1, rel.shape[0] * heads * side * side * rel.element_size())
        step = self.depth if rel.device.type != 'cpu' else \
            max(1, min(self.depth, RELATION_CHUNK_BYTES // block_bytes))
        old = (self.prev_grid, self.prev_grid)
        for start in range(0, self.depth, step):
            part = upsample_relation(rel[:, start * heads:(start + step) * heads], old, hw)
            yield from part.split(heads, dim=1)

    def reused_features(self, prev_tok: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """Every block's reused features, ``[L, B, 1 + H*W, out]`` (the class token's zero):
        what each :class:`FeatureReuse` module computes from the previous exit's image tokens
        ``prev_tok`` (``[B, P, C']``), resized to this exit's ``hw`` grid. The ``L`` modules
        read the same tokens, so they run together: one normalisation, two batched matrix
        products over the stacked weights and one resize of all ``L * out`` maps, instead of
        ``L`` small MLPs and resizes (the same arithmetic; far fewer operators)."""
        mods = self.feature_modules
        b, p, c = prev_tok.shape
        ph = pw = self.prev_grid
        if p != ph * pw:
            raise ValueError(f'previous exit tokens {tuple(prev_tok.shape)} are not a '
                             f'{ph}x{pw} grid')
        first = mods[0]
        xh = F.layer_norm(prev_tok, (c, ), eps=first.norm.eps).reshape(1, b * p, c)
        gain = torch.stack([m.norm.weight for m in mods])[:, None]   # [L, 1, C']
        shift = torch.stack([m.norm.bias for m in mods])[:, None]
        w1 = torch.stack([m.fc1.weight for m in mods]).transpose(1, 2)  # [L, C', hidden]
        b1 = torch.stack([m.fc1.bias for m in mods])[:, None]
        w2 = torch.stack([m.fc2.weight for m in mods]).transpose(1, 2)  # [L, hidden, out]
        b2 = torch.stack([m.fc2.bias for m in mods])[:, None]
        h = first.act(torch.baddbmm(b1, torch.addcmul(shift, xh, gain), w1))
        f = torch.baddbmm(b2, h, w2)                                     # [L, B*P, out]
        n, out = len(mods), f.shape[-1]
        H, W = (int(v) for v in hw)
        if fl.resize_is_copy(ph, H) and fl.resize_is_copy(pw, W):
            # each new token copies an old one: one row index over the tokens, the class
            # token's (a zero row put in front) included
            idx = relation_index(ph, pw, H, W, f.device)
            return F.pad(f.view(n, b, p, out), (0, 0, 1, 0)).index_select(2, idx)
        f = f.view(n, b, ph, pw, out).permute(1, 0, 4, 2, 3).reshape(b, n * out, ph, pw)
        f = resize_grid(f, hw).reshape(b, n, out, H * W).permute(1, 0, 3, 2)  # [L, B, HW, out]
        return F.pad(f, (0, 0, 1, 0))  # the class token's row: zeros

    # ------------------------------------------------------------------ FLOPs
    def num_tokens(self) -> int:
        return self.grid * self.grid + 1

    def flops(self) -> int:
        """MACs of this exit for one image (whatever the input size: it is resized)."""
        n = self.num_tokens()
        bb = self.backbone
        if self.host == 'vit':
            total = bb.patch_embed.flops((self.input_size, self.input_size))
        else:
            total = bb.tokenizer_flops()
        # the blocks count their wider FFN input themselves (``ffn_extra_dims``)
        total += sum(int(blk.flops(n)) for blk in bb.blocks)
        total += fl.linear_flops(1, self.embed_dims, self.head.num_classes)
        old, new = (self.prev_grid, ) * 2, (self.grid, ) * 2
        if self.feature_reuse:
            p = self.prev_grid * self.prev_grid
            total += sum(m.flops(p) for m in self.feature_modules)
            # each module's maps resized to this grid (two small matrix products per map)
            total += fl.grid_resize_flops(old, new, sum(m.out_dims for m in self.feature_modules))
        if self.relation_reuse:
            np_ = self.prev_grid * self.prev_grid + 1
            total += self.relation_module.flops(np_ * np_)
            total += fl.relation_upsample_flops(self.relation_module.channels, old, new)
        return int(total)


#: module names of the exits in the public code's checkpoints (3 exits; a 2-exit model uses the
#: first and the last)
OFFICIAL_EXIT_NAMES = ('less_less_token', 'less_token', 'normal_token')


def _dvt_state_dict(ckpt) -> Dict[str, torch.Tensor]:
    """The tensors of a DVT checkpoint (``model_state_dict`` of the public code's files,
    ``state_dict`` / ``model`` / ``module`` otherwise), without a ``module.`` prefix."""
    from mmdyn.utils.checkpoint import unwrap_state_dict
    return unwrap_state_dict(ckpt)


def official_exit_names(sd: Dict[str, torch.Tensor]) -> Tuple[str, ...]:
    """The public code's exit modules present in a state dict, in cascade order (empty for
    any other layout)."""
    return tuple(n for n in OFFICIAL_EXIT_NAMES if any(k.startswith(n + '.') for k in sd))


def is_official_dvt(ckpt) -> bool:
    """Whether ``ckpt`` is a checkpoint of the public DVT code (``model_state_dict`` with
    ``less_less_token.*`` ... keys, either host)."""
    try:
        return bool(official_exit_names(_dvt_state_dict(ckpt)))
    except TypeError:
        return False


def _convert_official_exit(sub: Dict[str, torch.Tensor], name: str,
                           pre: str) -> Dict[str, torch.Tensor]:
    """One exit module ``name`` of a public DVT checkpoint (``sub``: its keys without
    ``name.``) in mmdyn's keys under ``pre``; every tensor accounted for."""
    out = {}
    rest, done = {}, 0
    for key, v in sub.items():
        if key.startswith('head.'):
            out[pre + 'head.fc.' + key[len('head.'):]] = v
            done += v.numel()
            continue
        if key.startswith('relation_reuse_conv.'):
            idx, leaf = key[len('relation_reuse_conv.'):].split('.')
            fc = {'0': 'fc1', '2': 'fc2'}[idx]
            out[pre + f'relation_module.{fc}.{leaf}'] = v.flatten(1) if v.dim() == 4 else v
            done += v.numel()
            continue
        parts = key.split('.')
        if len(parts) > 3 and parts[0] == 'blocks' and parts[2] == 'feature_resuse_mlp':
            i, sub_key = parts[1], '.'.join(parts[3:])
            if sub_key.startswith('0.'):
                new = 'norm.' + sub_key[2:]
            else:  # '1.fc1.weight'
                new = sub_key[2:]
            out[pre + f'feature_modules.{i}.{new}'] = v
            done += v.numel()
            continue
        rest[key] = v
    if any(key.startswith('tokens_to_token.') for key in rest):  # T2T-ViT hosts
        conv = {key: v for key, v in t2t_to_mmdyn(rest).items()
                if not key.startswith('head.')}
        dropped = rest['pos_embed'].numel() if 'pos_embed' in rest else 0
    else:
        conv = _vit_timm(rest)
        dropped = 0
    for key, v in conv.items():
        out[pre + 'backbone.' + key] = v
    # every tensor accounted for (the fused qkv splits keep the element count)
    n_src = sum(v.numel() for v in sub.values())
    n_out = done + sum(v.numel() for v in conv.values()) + dropped
    if n_src != n_out:
        raise ValueError(f'DVT checkpoint: exit {name} has {n_src} elements, {n_out} '
                         'converted; unrecognised keys in '
                         f'{sorted(rest)[:8]} ... (expected the public code\'s layout)')
    return out


def dvt_official_to_mmdyn(ckpt, num_exits: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Convert a checkpoint of the public DVT code to :class:`DVTClassifier` keys, whole.

    The public files (``DVT_T2t_vit_12``, ``DVT_T2t_vit_14``, ``DVT_Deit_small``) hold
    ``model_state_dict`` (also read: ``state_dict`` / ``model``, a ``module.`` prefix) with one
    module per exit, ``less_less_token.*`` (7x7), ``less_token.*`` (10x10), ``normal_token.*``
    (14x14); each is a timm-style ViT (DeiT host: ``patch_embed.proj``, ``pos_embed``, fused
    ``attn.qkv`` with bias) or a public-code T2T-ViT (``tokens_to_token.attention{1,2}``
    Performer layers with their random features ``w``, ``tokens_to_token.project``, fused
    ``attn.qkv`` without bias, a fixed sinusoidal ``pos_embed``), with ``cls_token``,
    ``norm``, ``head``, per block ``feature_resuse_mlp`` (LN + Mlp, exits 2 and 3) and per exit
    ``relation_reuse_conv`` (two 1x1 convs, exits 2 and 3).

    ``num_exits``: the exits present (default); a 2-exit checkpoint holds ``less_less_token``
    and ``normal_token``. Fewer exits than the checkpoint has are refused: its last exit's
    reuse modules were trained on the features of the exit before it, so dropping that exit
    would not give the authors' model (none was released with 2 exits). Every source tensor
    is used except the T2T exits' fixed sinusoidal ``pos_embed`` (mmdyn's is the same table,
    a buffer); anything else left over is an error.
    A checkpoint already in mmdyn's layout is returned unchanged (tensors only).
    """
    sd = _dvt_state_dict(ckpt)
    present = official_exit_names(sd)
    if not present:
        return sd
    if num_exits is None:
        num_exits = len(present)
    if num_exits not in (2, 3):
        raise UserValueError(f'the public checkpoints have 2 or 3 exits, not {num_exits}')
    if num_exits < len(present):
        raise UserValueError(
            f'the DVT checkpoint has {len(present)} exits ({", ".join(present)}); keeping '
            f'{num_exits} would not be its model (an exit\'s reuse modules were trained on the '
            'exit before it): convert all of them')
    names = OFFICIAL_EXIT_NAMES if num_exits == 3 else \
        (OFFICIAL_EXIT_NAMES[0], OFFICIAL_EXIT_NAMES[2])
    missing = [n for n in names if n not in present]
    left = sorted(k for k in sd if k.split('.', 1)[0] not in names)
    if missing or left:
        raise UserValueError(f'DVT checkpoint: {num_exits} exits need the modules {names}; '
                             f'missing {missing}, keys of no converted exit: {left[:8]}')
    out = {}
    for k, name in enumerate(names):
        sub = {key[len(name) + 1:]: v for key, v in sd.items() if key.startswith(name + '.')}
        out.update(_convert_official_exit(sub, name, f'exits.{k}.'))
    return out


def official_thresholds(ckpt, level: int, num_exits: int = 3) -> List[float]:
    """Thresholds ``eta_1..eta_{K-1}`` of the public checkpoint's budget level ``level``
    (1..59: its ``dynamic_threshold[level - 1]``, found on training images for the exit shares
    ``q**k``, ``q = level / 20``), in :class:`DVTClassifier`'s convention. The public rule
    stops an image when ``conf >= T_k``; a ``T_k`` above 1 (its "no threshold found", 1e8)
    becomes 1.0 (nobody stops), a ``T_k`` of exactly 1.0 the largest float below 1 (which,
    like the public rule, admits a confidence of 1.0)."""
    table = ckpt.get('dynamic_threshold') if isinstance(ckpt, dict) else None
    if table is None:
        raise KeyError('the checkpoint holds no dynamic_threshold (the public DVT files do)')
    table = torch.as_tensor(table, dtype=torch.float64)
    if not 1 <= level <= table.shape[0]:
        raise UserValueError(f'budget level must be in 1..{table.shape[0]}, got {level}')
    row = table[level - 1].tolist()
    if num_exits == 2:
        row = [row[0], row[-1]]
    out = []
    for t in row[:num_exits - 1]:
        if t > 1.:
            out.append(1.)
        elif t == 1.:
            out.append(MAX_EXIT_THRESHOLD)
        else:
            out.append(max(float(t), 0.))
    return out


def is_single_t2t(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is one T2T-ViT (the public code's, mmpretrain's or mmdyn's
    ``T2TViT``), not a DVT cascade."""
    if any(k.startswith(('exits.', 'module.exits.')) or k.split('.', 1)[0] in OFFICIAL_EXIT_NAMES
           for k in sd):
        return False
    try:
        detect_t2t_layout(sd)
    except ValueError:
        return False
    return True


def t2t_to_dvt_exits(ckpt, num_exits: int, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """One T2T-ViT checkpoint (any layout :func:`t2t_to_mmdyn` reads) copied into every exit of
    a T2T-host DVT: ``exits.{k}.backbone.*`` and, from its ImageNet classifier, ``exits.{k}.
    head.fc.*``. Shapes are fitted to the exits by :meth:`DVTClassifier.adapt_t2t_exits`."""
    sd = t2t_to_mmdyn(ckpt, use_ema=use_ema)
    out = {}
    for k in range(num_exits):
        for key, v in sd.items():
            if key.startswith('head.'):
                out[f'exits.{k}.head.fc.' + key[len('head.'):]] = v
            else:
                out[f'exits.{k}.backbone.' + key] = v
    return out


def _load_thresholds(path: str) -> List[float]:
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        data = data['thresholds']
    return [float(t) for t in data]


@MODELS.register_module()
class DVTClassifier(DynamicModuleMixin, BaseClassifier):
    """Dynamic Vision Transformer: a cascade of transformers with early exit.

    Args:
        arch (str | dict): Host ViT arch of every exit (``'deit-s'``), or a list, one per exit.
        exits (Sequence[int | dict]): Token grid side per exit, or dicts with ``grid`` and
            optionally ``patch_size`` / ``arch`` / ``host`` / ``soft_split`` (T2T) /
            ``input_size`` and ``patch_pad`` (ViT). Default ``(7, 10, 14)``.
        patch_size (int): Tokenizer patch size (default for every exit). Default 16.
        num_classes (int): Default 1000.
        feature_reuse, relation_reuse (bool): Reuse between consecutive exits (the first exit
            never reuses). Default True (the released models).
        feature_reuse_dims (tuple): ``(hidden, out)`` widths of every feature-reuse MLP
            (``LN -> Linear(C, hidden) -> GELU -> Linear(hidden, out)``; ``out`` channels join
            each downstream FFN's input). Default ``(128, 48)``, the paper's for 384-wide
            exits; tiny models scale them down.
        thresholds (Sequence[float], optional): Confidence thresholds ``eta_1..eta_{K-1}`` in
            [0, 1] (the last exit takes everything); an image stops at exit ``k`` when its top
            softmax probability is ``>= thresholds[k]``, except that 1.0 means "nobody stops
            at this exit" (not even a saturated softmax whose maximum is exactly 1.0 in float).
            Default: 1.0 each (no early exit).
        thresholds_file (str, optional): JSON written by ``tools/analysis_tools/
            dvt_thresholds.py``; when the file exists its thresholds replace ``thresholds``.
        backbone_cfg (dict, optional): Further :class:`ViT` arguments for every exit.
        head_init_cfg (dict, optional): ``init_cfg`` of every exit's ``LinearClsHead``.
        loss (dict, optional): mmpretrain loss of every exit (default ``CrossEntropyLoss``;
            the recipes use ``LabelSmoothLoss``). Soft (Mixup/CutMix) targets are handled by
            mmpretrain's head.
        train_cfg (dict, optional): mmpretrain's ``dict(augments=[...])`` batch augments.
        data_preprocessor (dict, optional): Default ``ClsDataPreprocessor``.
        host (str): ``'vit'`` (core ViT / DeiT, default) or ``'t2t'`` (:class:`T2TViT`, arch
            ``'t2t-vit-12'`` / ``'t2t-vit-14'``; exits may give ``soft_split``).
        img_size (int): Input side of the T2T host. Default 224.
    """

    def __init__(self,
                 arch: Union[str, dict, Sequence] = 'deit-s',
                 exits: Sequence = (7, 10, 14),
                 patch_size: int = 16,
                 num_classes: int = 1000,
                 feature_reuse: bool = True,
                 relation_reuse: bool = True,
                 thresholds: Optional[Sequence[float]] = None,
                 thresholds_file: Optional[str] = None,
                 backbone_cfg: Optional[dict] = None,
                 head_init_cfg: Optional[dict] = None,
                 loss: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 host: str = 'vit',
                 img_size: int = 224,
                 feature_reuse_dims: Sequence[int] = (FEATURE_REUSE_HIDDEN,
                                                      FEATURE_REUSE_DIMS)):
        if data_preprocessor is None:
            data_preprocessor = {}
        if isinstance(data_preprocessor, dict):
            from mmpretrain.registry import MODELS as PRETRAIN_MODELS
            data_preprocessor = dict(data_preprocessor)
            data_preprocessor.setdefault('type', 'ClsDataPreprocessor')
            data_preprocessor.setdefault('batch_augments', train_cfg)
            data_preprocessor = PRETRAIN_MODELS.build(data_preprocessor)
        super().__init__(init_cfg=init_cfg, data_preprocessor=data_preprocessor)
        self.reset_dynamic_records()
        specs, archs, grids = self._parse_exits(exits, arch)
        self.num_exits = len(specs)
        self.grids = grids
        self.feature_reuse = bool(feature_reuse)
        self.relation_reuse = bool(relation_reuse)
        self.exits = ModuleList()
        for k, s in enumerate(specs):
            prev = self.exits[k - 1] if k > 0 else None
            self.exits.append(DVTExit(
                s.get('arch', archs[k]), s['grid'], s.get('patch_size', patch_size),
                num_classes, prev=prev, feature_reuse=feature_reuse and k > 0,
                relation_reuse=relation_reuse and k > 0, backbone_cfg=backbone_cfg,
                head_init_cfg=head_init_cfg, loss=loss, host=s.get('host', host),
                img_size=img_size, soft_split=s.get('soft_split'),
                input_size=s.get('input_size'), patch_pad=s.get('patch_pad'),
                export_relations=relation_reuse and k < len(specs) - 1,
                feature_reuse_dims=feature_reuse_dims))
        self.num_classes = num_classes
        self.thresholds_file = thresholds_file
        self.set_thresholds(self._initial_thresholds(thresholds, thresholds_file))

    @staticmethod
    def _parse_exits(exits, arch) -> Tuple[List[dict], list, List[int]]:
        """``(exit specs, arch per exit, token grid per exit)``; checks >= 2 exits with
        growing positive integer grids."""
        exits = list(exits)
        if len(exits) < 2:
            raise ValueError(f'DVT needs at least 2 exits, got {len(exits)}')
        specs = [e if isinstance(e, dict) else dict(grid=e) for e in exits]
        archs = list(arch) if isinstance(arch, (list, tuple)) else [arch] * len(specs)
        if len(archs) != len(specs):
            raise ValueError(f'{len(archs)} archs for {len(specs)} exits')
        grids = []
        for s in specs:
            g = s.get('grid')
            if not isinstance(g, int) or g < 1:
                raise ValueError(f'each exit needs a positive integer grid, got {s}')
            grids.append(g)
        for a, b in zip(grids, grids[1:]):
            if b <= a:
                raise ValueError(f'token grids of the exits must grow, got {grids}')
        return specs, archs, grids

    def _initial_thresholds(self, thresholds, thresholds_file) -> Sequence[float]:
        """The thresholds of ``thresholds_file`` when it exists (a warning when it does not
        yet), else ``thresholds``, else 1.0 for every exit but the last."""
        if thresholds_file is not None and osp.isfile(thresholds_file):
            thresholds = _load_thresholds(thresholds_file)
        elif thresholds_file is not None:
            warnings.warn(f'DVT: thresholds file {thresholds_file} does not exist (yet); using '
                          f'thresholds={thresholds}. Write it with '
                          'tools/analysis_tools/dvt_thresholds.py')
        if thresholds is None:
            thresholds = [1.0] * (self.num_exits - 1)
        return thresholds

    def init_weights(self):
        """Random init of every part, then ``init_cfg`` ``type='Pretrained'`` weights if given:
        an mmdyn DVT checkpoint, one of the public DVT code's (DeiT or T2T hosts; converted, see
        :func:`dvt_official_to_mmdyn`) or a single T2T-ViT (the public T2T-ViT code's,
        mmpretrain's or mmdyn's layout) copied into every exit (:func:`t2t_to_dvt_exits`,
        shapes fitted by :meth:`adapt_t2t_exits`); tensors whose shapes still differ (e.g. the
        heads when fine-tuning on another data set) are skipped with a warning. A DVT checkpoint
        (public or mmdyn) must name exactly this model's tensors: a missing or unexpected key
        is an error (a single T2T-ViT lacks the reuse modules, which keep their init)."""
        pre = find_pretrained_cfg(self.init_cfg)
        if pre is None:
            return super().init_weights()
        # mmengine's own Pretrained loader cannot read these layouts: the other initialisers
        # and every part's init_weights run as BaseModule orders them, then the converted file
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        others = [c for c in cfgs if c is not pre]
        if others:
            initialize(self, others)
        for m in self.children():
            if hasattr(m, 'init_weights') and not getattr(m, 'is_init', False):
                m.init_weights()
        self._is_init = True
        n = self.num_exits

        def convert(c):
            if is_single_t2t(_dvt_state_dict(c)):
                return t2t_to_dvt_exits(c, n)
            sd = dvt_official_to_mmdyn(c, n)
            own = set(self.state_dict())
            missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
            if missing or unexpected:
                raise ValueError(
                    f'DVT checkpoint {pre["checkpoint"]} does not match this model: '
                    f'{len(missing)} missing keys {missing[:6]}, {len(unexpected)} unexpected '
                    f'keys {unexpected[:6]} (host, exits, reuse and arch must be those the '
                    'checkpoint was trained with)')
            return sd

        load_converted(self, pre['checkpoint'], convert, adapt=self.adapt_t2t_exits,
                       prefix=pre.get('prefix'))

    def adapt_t2t_exits(self, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Fit T2T-ViT weights to each T2T exit (:func:`adapt_t2t_state_dict`): the first soft
        split's kernel resampled to the exit's, the FFN input widened for reused features."""
        own = self.state_dict()
        for k, e in enumerate(self.exits):
            if e.host == 't2t':
                sd = adapt_t2t_state_dict(sd, own, prefix=f'exits.{k}.backbone.',
                                          extra_ffn_dims=e.feature_dims
                                          if e.feature_reuse else 0)
        return sd

    # ------------------------------------------------------------------ thresholds
    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """Set ``eta_1..eta_{K-1}`` (each in [0, 1]); the last exit always takes the rest."""
        thresholds = [float(t) for t in thresholds]
        if len(thresholds) != self.num_exits - 1:
            raise ValueError(f'{self.num_exits} exits need {self.num_exits - 1} thresholds '
                             f'(the last exit takes everything), got {len(thresholds)}')
        for t in thresholds:
            if not 0. <= t <= 1.:
                raise ValueError(f'DVT thresholds must lie in [0, 1], got {thresholds}')
        self.thresholds = thresholds

    # ------------------------------------------------------------------ FLOPs
    def exit_flops(self) -> List[int]:
        """MACs of each exit alone (its transformer, head and reuse modules), per image."""
        return [e.flops() for e in self.exits]

    def cumulative_flops(self) -> List[int]:
        """MACs per image of stopping at exit ``k`` (exits ``0..k`` all ran)."""
        out, acc = [], 0
        for f in self.exit_flops():
            acc += f
            out.append(acc)
        return out

    def _block_rows(self) -> List[Dict[str, float]]:
        """Rows of :meth:`block_table`, one per exit (``exits.<k>``): an image ran exit ``k``
        when it stopped at ``k`` or later (every exit without an ``exit`` map: training, full
        cascade); ``tokens`` are the exit's ``grid ** 2 + 1`` for those images, 0 for others."""
        stop = self.last_maps.get('exit')
        rows = []
        for k, e in enumerate(self.exits):
            ran = 1.0 if stop is None else float((stop.flatten() >= k).double().mean())
            n = e.grid ** 2 + 1
            rows.append(dict(block=f'exits.{k}', tokens=ran * n, kept_ratio=ran,
                             flops=ran * float(e.flops())))
        return rows

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """Every exit run (the cascade with no early exit). The same for every ``(H, W)``:
        each exit resizes the image to its own grid first."""
        image_hw(img_shape)  # a wrong-length shape is still an error
        return int(sum(self.exit_flops()))

    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """``exit``: the exit each image took (one cell per image, a choice)."""
        return None, False

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """``tensor``: in training or under ``force_full`` the tuple of every exit's logits on
        the whole batch; in eval the logits ``[B, classes]`` of the exit each image took (real
        early exit, what the dynamic model computes). ``loss`` / ``predict``: see the module
        doc."""
        if mode == 'tensor':
            if self.training or self.force_full:
                return tuple(self.run_all(inputs))
            return self.early_exit(inputs)[0]
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def extract_feat(self, inputs: torch.Tensor):
        return tuple(self.run_all(inputs))

    def run_all(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        """Logits of every exit on the whole batch (records the whole cascade's cost)."""
        outs, state = [], None
        for e in self.exits:
            logits, state = e(inputs, state)
            outs.append(logits)
        self._record_full(inputs)
        return outs

    def _record_full(self, inputs: torch.Tensor) -> None:
        """Record every exit run for each image (on the input's device)."""
        b, dev = inputs.shape[0], inputs.device
        flops = torch.full((b, ), float(self.static_flops()), dtype=torch.float64, device=dev)
        self.record_dynamic(flops, stats=dict(exit_ratio=torch.zeros(b, device=dev)))

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> Dict:
        """Sum of the exits' cross-entropies (Eq. 1), one entry per exit."""
        losses, state = {}, None
        for k, e in enumerate(self.exits):
            logits, state = e(inputs, state)
            losses[f'loss_exit{k}'] = e.head._get_loss(logits, data_samples)['loss']
        self._record_full(inputs)
        return losses

    def early_exit(self, inputs: torch.Tensor):
        """Early-exit inference on a batch.

        Returns ``(logits [B, classes], exit_idx [B], all_logits)``: each image's logits from
        the exit it stopped at; ``all_logits`` is the list of every exit's logits under
        ``force_full`` (every image runs every exit, the last exit decides), else None. Records
        the realised FLOPs per image.
        """
        b = inputs.shape[0]
        dev = inputs.device
        k_last = self.num_exits - 1
        out = None
        exit_idx = torch.full((b, ), k_last, dtype=torch.long, device=dev)
        flops = torch.zeros(b, dtype=torch.float64, device=dev)
        all_logits = [] if self.force_full else None
        remaining = torch.arange(b, device=dev)
        state = None
        for k, e in enumerate(self.exits):
            logits, state = e(inputs.index_select(0, remaining), state)
            if out is None:
                out = logits.new_zeros(b, logits.shape[-1])
            flops[remaining] += float(e.flops())
            if self.force_full:
                all_logits.append(logits)
                if k == k_last:
                    out = logits
                continue
            if k == k_last:
                done = torch.ones(len(remaining), dtype=torch.bool, device=dev)
            else:
                conf = logits.float().softmax(dim=-1).max(dim=-1).values
                done = exits_at(conf, self.thresholds[k])
            idx = remaining[done]
            out[idx] = logits[done]
            exit_idx[idx] = k
            keep = ~done
            remaining = remaining[keep]
            if remaining.numel() == 0:
                break
            state = {n: t[keep] for n, t in state.items()}
        stats = dict(exit_ratio=(exit_idx < k_last).float())
        for k in range(self.num_exits):
            stats[f'exit{k}_ratio'] = (exit_idx == k).float()
        self.record_dynamic(flops, stats=stats,
                            maps=dict(exit=exit_idx.view(b, 1, 1).float()))
        return out, exit_idx, all_logits

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """Early-exit inference (all exits under ``force_full``): samples with ``pred_score``,
        ``pred_label`` and ``metainfo['exit_index']`` (and ``'exit_scores'`` ``[K, classes]``
        under ``force_full``)."""
        logits, exit_idx, all_logits = self.early_exit(inputs)
        scores = logits.float().softmax(dim=-1)
        labels = scores.argmax(dim=1, keepdim=True)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        all_scores = None
        if all_logits is not None:
            all_scores = torch.stack([a.float().softmax(-1) for a in all_logits], 1).cpu()
        for i, s in enumerate(data_samples):
            s.set_pred_score(scores[i]).set_pred_label(labels[i])
            meta = dict(exit_index=int(exit_idx[i]))
            if all_scores is not None:
                meta['exit_scores'] = all_scores[i]
            s.set_metainfo(meta)
        return data_samples
