"""DoViT: dynamic token-pass Vision Transformer for semantic segmentation.

A ViT/DeiT host with auxiliary heads after a few *decision blocks*. After decision block ``l``
(1-based; by default blocks 2, 5, 8 of a 12-block host and 6, 12, 18 of a 24-block one, the
positions of the authors' configs) an auxiliary head predicts class scores for the reconstructed
patch-token map. A token's confidence is the max softmax of its prediction, averaged over the
token's sub-pixels when the head up-samples (SETR-UP heads: 4x4 sub-pixels per token). A token
stops when its confidence exceeds the threshold ``xi`` (Eq. 4), cumulatively (Eq. 5), and, with
``diff_conf``, also when its confidence is below ``diff_conf`` (a near-uniform prediction, the
authors' code); a stopped token is never updated again and carries its last features to the
later auxiliary heads and the decode head. The class token is always kept.

The auxiliary heads are mmseg decode heads built from head configs (``aux_head``): by default
the authors' FCN-style head (1x1 conv to 256 + BN + ReLU + 1x1 conv to the classes); ``'setr_up'``
is their SETR head (LN, 1x1 conv + BN + ReLU, x4 bilinear up-sampling, 1x1 conv), ``'conv1x1'``
the paper's single 1x1 convolution. Each head's own ``loss_decode`` gives its loss (Eq. 10),
computed by :class:`mmdyn.models.segmentors.DoViTEncoderDecoder`, which reads
:attr:`DoViT.aux_logits`.

Separate self-attention: in every later block only the kept tokens of an image form queries,
keys and values; stopped tokens do no computation. Each image keeps its own set: the kept tokens
of a batch are gathered into a padded batch (:mod:`mmdyn.models.layers.token_sets`) with a key
padding mask, so an image computes exactly what it would alone. Token reconstruction writes the
updated tokens back to their original positions before every auxiliary head, every returned
feature map and the end. Token merging (Eq. 8) folds the mean of all stopped tokens into the
class token at a decision point where more than ``agg_rate`` of an image's tokens (class token
included) have stopped (the authors' rule; ``agg_rate=0`` merges whenever a token has stopped,
the paper's text).

The decision is hard and detached (no straight-through, no budget loss): the same path runs in
training and inference.

Records of the last forward (besides the dynamic-module interface): ``last_block_tokens``
(``[B, depth]`` kept tokens per block, class token included), :meth:`block_table` (the paper's
Fig. 6), ``last_confidences`` (token confidence maps, one per decision point) and ``last_maps``
(``keep_k``: 0/1 kept tokens after decision ``k``; ``conf_k``: the confidences binned into
integer levels at :data:`CONF_LEVEL_EDGES`, the paper's Fig. 5). For benchmarks,
a decision override (``decision_override=dict(keep_ratios=...)`` or
:func:`mmdyn.models.utils.override_decisions`) replaces the threshold by fixed kept fractions, so
that speed and FLOPs do not depend on (random) weights.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.analysis import flops as fl
from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from ..layers.attention import nlc_to_nchw
from ..layers.shape_constants import constant, device_key
from ..layers.token_sets import gather_tokens, make_token_set, scatter_tokens
from ..utils.dynamic import DynamicModuleMixin, image_hw, removed_override_arguments
from .vit import ViT

__all__ = ['DoViT']

Threshold = Union[float, Sequence[float]]

# Upper edges of the confidence levels that ``last_maps['conf_k']`` records (level 0: below 0.5,
# ..., level 6: above 0.99): fine near 1, where DoViT's thresholds lie (0.96 - 0.985).
CONF_LEVEL_EDGES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)

# Auxiliary-head presets: mmseg decode-head configs (``in_channels`` and ``num_classes`` are
# filled in by DoViT). 'fcn' and 'setr_up' are the heads of the authors' Segmenter and SETR
# configs (loss weight 0.4 each; their configs use SyncBN, BN here so that a preset also trains
# on one device); 'conv1x1' is the paper's single 1x1 convolution (alpha = 1.0).
_CE = dict(type='CrossEntropyLoss', use_sigmoid=False)
AUX_HEAD_PRESETS = {
    'fcn': dict(type='FCNHead', channels=256, num_convs=1, kernel_size=1, concat_input=False,
                dropout_ratio=0, norm_cfg=dict(type='BN', requires_grad=True),
                act_cfg=dict(type='ReLU'), align_corners=False,
                loss_decode=dict(_CE, loss_weight=0.4)),
    'setr_up': dict(type='SETRUPHead', channels=256, num_convs=1, up_scale=4, kernel_size=1,
                    dropout_ratio=0, norm_cfg=dict(type='BN', requires_grad=True),
                    act_cfg=dict(type='ReLU'), align_corners=False,
                    loss_decode=dict(_CE, loss_weight=0.4)),
    'conv1x1': dict(type='FCNHead', num_convs=0, concat_input=False, dropout_ratio=0,
                    align_corners=False, loss_decode=dict(_CE, loss_weight=1.0)),
}
DEFAULT_DECISION_LAYERS = {12: (2, 5, 8), 24: (6, 12, 18)}


def aux_head_cfg(aux_head: Union[str, dict], in_channels: int, num_classes: int) -> dict:
    """The mmseg head config of one auxiliary head: a preset name of
    :data:`AUX_HEAD_PRESETS` or a head config dict (mmseg scope; ``in_channels``,
    ``num_classes`` and ``in_index`` are filled in when absent)."""
    if isinstance(aux_head, str):
        if aux_head not in AUX_HEAD_PRESETS:
            raise ValueError(f'DoViT: unknown aux_head {aux_head!r}; use one of '
                             f'{sorted(AUX_HEAD_PRESETS)} or an mmseg head config dict')
        cfg = copy.deepcopy(AUX_HEAD_PRESETS[aux_head])
        if aux_head == 'conv1x1':
            cfg['channels'] = in_channels
    elif isinstance(aux_head, dict) and 'type' in aux_head:
        cfg = copy.deepcopy(dict(aux_head))
    else:
        raise TypeError(f'DoViT: aux_head must be a preset name or an mmseg head config dict '
                        f'with a type, got {aux_head!r}')
    cfg.setdefault('in_channels', in_channels)
    cfg.setdefault('num_classes', num_classes)
    cfg.setdefault('in_index', 0)
    if cfg['in_channels'] != in_channels or cfg['num_classes'] != num_classes:
        raise ValueError(f"DoViT: aux_head has in_channels={cfg['in_channels']} and "
                         f"num_classes={cfg['num_classes']}, the backbone needs {in_channels} "
                         f'and {num_classes}')
    return cfg


def build_aux_head(cfg: dict) -> nn.Module:
    """Build an mmseg decode head (mmseg's registry, also for plain type names)."""
    import mmseg.models  # noqa: F401  (registers the heads)
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG_MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return SEG_MODELS.build(cfg)


def _conv_chain_flops(module: nn.Module, hw: Tuple[int, int]) -> Tuple[int, Tuple[int, int]]:
    """``(MACs, output h x w)`` of the 2-D convolutions in ``module`` (a plain chain: its
    convolutions and up-samplings, modules with a ``size`` or ``scale_factor``, apply in
    registration order, as in an ``nn.Sequential`` of mmcv ``ConvModule`` s) on an ``h x w``
    map."""
    flops = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out = fl.conv2d_out_shape(hw, m.kernel_size, m.stride, m.padding, m.dilation)
            flops += fl.conv2d_flops(out, m.in_channels, m.out_channels, m.kernel_size,
                                     m.groups)
            hw = out
        elif getattr(m, 'size', None):  # an up-sampling to a fixed size
            hw = tuple(m.size) if isinstance(m.size, (tuple, list)) else (m.size, m.size)
        elif getattr(m, 'scale_factor', None):  # nn.Upsample, mmseg's Upsample
            s = m.scale_factor if isinstance(m.scale_factor, tuple) else (m.scale_factor, ) * 2
            hw = (int(hw[0] * s[0]), int(hw[1] * s[1]))
    return flops, hw


def decode_head_flops(head: nn.Module, hw: Sequence[int]) -> int:
    """MACs of an mmseg decode head on an ``h x w`` input map, from its layout: the
    ``up_convs`` chains of SETR's up-sampling heads, or the ``convs`` (and ``conv_cat`` on the
    input joined to their output) of FCN heads, then the ``conv_seg`` classifier. Any other
    head is a ``TypeError``."""
    hw = (int(hw[0]), int(hw[1]))
    flops = 0
    if isinstance(getattr(head, 'up_convs', None), nn.ModuleList):
        for chain in head.up_convs:
            f, hw = _conv_chain_flops(chain, hw)
            flops += f
    elif isinstance(getattr(head, 'convs', None), nn.Module):
        flops, out = _conv_chain_flops(head.convs, hw)
        if getattr(head, 'concat_input', False):
            f, out = _conv_chain_flops(head.conv_cat, out)
            flops += f
        hw = out
    else:
        raise TypeError(f'DoViT: cannot count the FLOPs of auxiliary head '
                        f'{type(head).__name__} (an FCN head with convs or a SETR up-sampling '
                        'head with up_convs is needed)')
    return flops + _conv_chain_flops(head.conv_seg, hw)[0]


def token_confidence(logits: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """Per-token confidence ``[B, h, w]`` of auxiliary logits ``[B, K, s*h, s*w]``: the max
    softmax of every pixel, averaged over the ``s x s`` sub-pixels of each token (``s = 1``:
    the max softmax itself)."""
    h, w = hw
    conf = logits.softmax(1).amax(1)
    sh, sw = conf.shape[-2:]
    s = sh // h
    if s < 1 or sh != s * h or sw != s * w:
        raise ValueError(f'DoViT: auxiliary logits of size {(sh, sw)} are not an integer '
                         f'up-sampling of the {h}x{w} token grid')
    if s > 1:
        conf = F.avg_pool2d(conf.unsqueeze(1), kernel_size=s, stride=s).squeeze(1)
    return conf


def _check_threshold(value, num: int, name: str = 'threshold') -> None:
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and len(vals) != num:
        raise ValueError(f'DoViT: {name} has {len(vals)} entries, one per decision layer '
                         f'({num}) is needed')
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f'DoViT: {name} must be a float or a list of floats, got {value!r}')
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f'DoViT: {name} (xi) must be in [0, 1], got {v}')


@MODELS.register_module()
@check_arguments
class DoViT(DynamicModuleMixin, ViT):
    """Dynamic token-pass ViT (DoViT).

    Args:
        arch (str | dict): ViT host arch (``'vit-s'``, ``'vit-b'``, ``'vit-l'``, ``'deit-s'``,
            ``'deit-b'``, ... or a dict), see :class:`ViT`.
        num_classes (int): Classes of the auxiliary heads. Default 150.
        decision_layers (Sequence[int], optional): 1-based blocks whose output an auxiliary
            head reads and after which the token-pass decision is taken (stopped tokens skip
            the later blocks), strictly increasing, each in ``[1, depth - 1]``. Default: the
            authors' positions, ``(2, 5, 8)`` for 12 blocks and ``(6, 12, 18)`` for 24 blocks
            (their ``out_indices[:-1]``, read before those 0-based blocks), else the blocks at a
            quarter, half and three quarters of the depth.
        threshold (float | Sequence[float]): Confidence threshold ``xi`` in [0, 1] (one value,
            or one per decision layer). A token stops when its confidence ``> xi``; ``1.0``
            stops nothing. Default 0.985. Schedulable (``backbone.threshold``, or
            ``backbone.threshold.<k>`` for a sequence).
        train_threshold (float | Sequence[float], optional): Threshold used in training mode
            (e.g. moved from 1.0 to ``xi`` by :class:`mmdyn.DynamicScheduleHook` at
            ``backbone.train_threshold``, or ``backbone.train_threshold.<k>`` for a list).
            None: ``threshold``.
        diff_conf (float, optional): A token also stops when its confidence is ``<
            diff_conf`` (a near-uniform prediction; the authors' ADE20K configs use 0.02).
            None (default): no such rule.
        merge_tokens (bool): Token merging (Eq. 8). Default True.
        agg_rate (float): Merge only at a decision point where the stopped tokens are more
            than this fraction of the image's tokens (class token included), the authors'
            rule. Default 0.1; 0 merges whenever a token has stopped (the paper's text).
        aux_head (str | dict): The auxiliary heads (one per decision layer, all alike): a
            preset of :data:`AUX_HEAD_PRESETS` (``'fcn'``, default: the authors' Segmenter head;
            ``'setr_up'``: their SETR head; ``'conv1x1'``: the paper's single 1x1 conv) or an
            mmseg decode-head config (``in_channels``, ``num_classes``, ``in_index`` filled
            in). Each head's ``loss_decode`` is its auxiliary loss.
        decision_override (dict, optional): For benchmarks and FLOPs studies only, the
            decisions imposed instead of the threshold's
            (:func:`mmdyn.models.utils.override_decisions` sets the same for a ``with``
            block): ``keep_ratios``, one ratio per decision layer (or one float for all) in
            [0, 1], non-increasing (the stops are cumulative): decision ``k`` keeps exactly
            ``round(r_k * N)`` of the ``N`` patch tokens (the least confident of those still
            kept; ties by position), so that the kept tokens per block, hence the FLOPs, do
            not depend on the weights. None (default): the confidence threshold decides.
        **kwargs: Passed to :class:`ViT` (``img_size``, ``out_indices``, ``final_norm``, ...).
    """
    arch_zoo = dict(ViT.arch_zoo)
    arch_zoo.update({
        'vit-l': dict(embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        'deit-l': dict(embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
    })

    def __init__(self,
                 arch: Union[str, dict] = 'vit-b',
                 num_classes: int = 150,
                 decision_layers: Optional[Sequence[int]] = None,
                 threshold: Threshold = 0.985,
                 train_threshold: Optional[Threshold] = None,
                 diff_conf: Optional[float] = None,
                 merge_tokens: bool = True,
                 agg_rate: float = 0.1,
                 aux_head: Union[str, dict] = 'fcn',
                 decision_override: Optional[dict] = None,
                 **kwargs):
        settings = self._parse_arch(arch)
        if settings['embed_dims'] % settings['num_heads']:
            raise ValueError(f"DoViT: num_heads {settings['num_heads']} does not divide the "
                             f"width {settings['embed_dims']}")
        if kwargs.get('with_cls_token', True) is False:
            raise ValueError('DoViT needs the class token (with_cls_token=True)')
        if kwargs.get('out_type', 'featmap') != 'featmap':
            raise ValueError("DoViT returns feature maps (out_type='featmap')")
        decision_layers = self._decision_layers(decision_layers, settings['depth'])
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'DoViT: num_classes must be a positive int, got {num_classes}')
        _check_threshold(threshold, len(decision_layers))
        if isinstance(threshold, tuple):
            threshold = list(threshold)  # schedulable per entry
        if train_threshold is not None:
            _check_threshold(train_threshold, len(decision_layers), 'train_threshold')
            if isinstance(train_threshold, tuple):
                train_threshold = list(train_threshold)
        if diff_conf is not None and (isinstance(diff_conf, bool) or not isinstance(
                diff_conf, (int, float)) or not 0.0 <= diff_conf <= 1.0):
            raise ValueError(f'DoViT: diff_conf must be None or a float in [0, 1], got '
                             f'{diff_conf!r}')
        if isinstance(agg_rate, bool) or not isinstance(agg_rate, (int, float)) or \
                not 0.0 <= agg_rate < 1.0:
            raise ValueError(f'DoViT: agg_rate must be a float in [0, 1), got {agg_rate!r}')
        super().__init__(arch=arch, **kwargs)
        self.num_classes = num_classes
        self.decision_layers = decision_layers
        self.set_decision_override(decision_override)
        self.threshold = threshold
        self.train_threshold = train_threshold
        self.diff_conf = None if diff_conf is None else float(diff_conf)
        self.merge_tokens = merge_tokens
        self.agg_rate = float(agg_rate)
        head_cfg = aux_head_cfg(aux_head, self.embed_dims, num_classes)
        self.aux_head_cfg = head_cfg
        self.aux_heads = nn.ModuleList([build_aux_head(head_cfg) for _ in decision_layers])
        decode_head_flops(self.aux_heads[0], (1, 1))  # a head it cannot count: an error now
        self.aux_logits: List[torch.Tensor] = []
        self.last_block_tokens: Optional[torch.Tensor] = None
        self.last_confidences: List[torch.Tensor] = []
        self.reset_dynamic_records()

    @staticmethod
    def _decision_layers(decision_layers, depth: int) -> Tuple[int, ...]:
        """The 1-based decision blocks (the depth's default for ``None``), checked: strictly
        increasing, in ``[1, depth - 1]``, at least one."""
        if decision_layers is None:
            decision_layers = DEFAULT_DECISION_LAYERS.get(
                depth, tuple(sorted({max(1, depth * k // 4) for k in (1, 2, 3)})))
        decision_layers = tuple(int(d) for d in decision_layers)
        if not decision_layers:
            raise ValueError('DoViT: at least one decision layer is needed')
        for d in decision_layers:
            if not 1 <= d <= depth - 1:
                raise ValueError(f'DoViT: decision layer {d} out of range: 1-based block '
                                 f'indices in [1, {depth - 1}] are allowed for {depth} blocks')
        if any(b <= a for a, b in zip(decision_layers, decision_layers[1:])):
            raise ValueError(f'DoViT: decision_layers must be strictly increasing, got '
                             f'{decision_layers}')
        return decision_layers

    #: what a schedule may set (DynamicScheduleHook refuses a schedule that leaves the range)
    value_ranges = dict(threshold=(0.0, 1.0), train_threshold=(0.0, 1.0))

    # ------------------------------------------------------------------ helpers
    def thresholds(self) -> List[float]:
        """Thresholds in use now, one per decision layer (checked at every forward, since a
        schedule hook may have changed them)."""
        value = self.threshold
        if self.training and self.train_threshold is not None:
            value = self.train_threshold
        value = value.tolist() if isinstance(value, torch.Tensor) else value
        _check_threshold(value, len(self.decision_layers))
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return [float(value)] * len(self.decision_layers)

    def init_weights(self):
        from mmengine.model import initialize
        for head in self.aux_heads:  # mmseg's head initialisation (its init_cfg), no logging
            if head.init_cfg is not None:
                initialize(head, head.init_cfg)
        super().init_weights()

    def aux_forward(self, k: int, feat: torch.Tensor) -> torch.Tensor:
        """Logits of auxiliary head ``k`` on a token map ``[B, E, h, w]``."""
        return self.aux_heads[k]([feat])

    def aux_head_flops(self, hw: Tuple[int, int]) -> int:
        """MACs of one auxiliary head on an ``h x w`` token map (its convolutions, 1 FLOP = 1
        multiply-add; :func:`decode_head_flops`). The heads always run on the whole
        reconstructed map."""
        return decode_head_flops(self.aux_heads[0], hw)

    def flops_breakdown(self, img_shape: Sequence[int] = (224, 224)) -> Dict[str, int]:
        """Static MACs: patch embedding, blocks (all tokens) and auxiliary heads."""
        res = super().flops_breakdown(img_shape)
        hw = self.patch_embed.out_shape(image_hw(img_shape))
        for k in range(len(self.aux_heads)):
            res[f'aux_heads.{k}'] = self.aux_head_flops(hw)
        return res

    def host_static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the static host ViT (no auxiliary heads)."""
        return int(sum(ViT.flops_breakdown(self, img_shape).values()))

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs with every token kept (auxiliary heads included: they run in both modes)."""
        return int(sum(self.flops_breakdown(img_shape).values()))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple:
        img_hw = tuple(x.shape[-2:])
        x, hw = self.embed(x)
        b, n_all, _ = x.shape
        n_patch = n_all - 1
        thr = self.thresholds()
        decision_at = {d - 1: k for k, d in enumerate(self.decision_layers)}  # 0-based block
        keep = torch.ones(b, n_all, dtype=torch.bool, device=x.device)
        token_set = None  # None: every token of every image is kept (dense blocks)
        compact = None  # the kept tokens, gathered, when token_set is not None
        block_tokens, outs = [], []
        aux_logits, maps, confs = [], {}, []
        kept_after = []

        def reconstruct():
            nonlocal x, compact
            if compact is not None:
                x = scatter_tokens(compact, token_set, x)
                compact = None
            return x

        for i, blk in enumerate(self.blocks):
            if token_set is None:
                x = blk(x, hw)
                block_tokens.append(torch.full((b, ), n_all, device=x.device))
            else:
                if compact is None:
                    compact = gather_tokens(x, token_set)
                compact = blk(compact, None, key_padding_mask=token_set.key_padding_mask)
                block_tokens.append(token_set.lengths)
            last = i == self.depth - 1
            if last or i in self.out_indices or i in decision_at:
                x = reconstruct()
            if last:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self.format_output(x, hw))
            if i in decision_at:
                k = decision_at[i]
                logits = self.aux_forward(k, nlc_to_nchw(x[:, 1:], hw))
                aux_logits.append(logits)
                with torch.no_grad():
                    conf = token_confidence(logits.detach(), hw)  # [B, h, w]
                    confs.append(conf)
                    maps[f'conf_{k}'] = self.confidence_levels(conf)
                    self._update_keep(k, conf.flatten(1), keep, thr[k])
                    maps[f'keep_{k}'] = keep[:, 1:].reshape(b, *hw).float()
                    kept_after.append(keep[:, 1:].float().mean(1))
                stopped = ~keep[:, 1:]
                if bool(stopped.any()):
                    if self.merge_tokens:
                        x = self._merge(x, stopped, self.agg_rate)
                    token_set = make_token_set(keep)
                else:
                    token_set = None

        self.aux_logits = aux_logits
        self.last_confidences = confs
        self._record_forward(block_tokens, img_hw, hw, n_patch, kept_after, maps)
        return tuple(outs)

    def _update_keep(self, k: int, conf: torch.Tensor, keep: torch.Tensor,
                     threshold: float) -> None:
        """Decision ``k`` on ``keep`` (``[B, 1 + N]``, in place) from the tokens' confidences
        ``conf`` (``[B, N]``): every gate on under ``force_full``, the decision override if one is
        set, else Eq. 4-5 (a token stops once its confidence passes the threshold; with
        ``diff_conf``, near-uniform tokens stop too; the class token always runs on)."""
        if self.force_full:
            return
        if self.decision_override is not None:
            keep[:, 1:] = self._forced_keep(conf, keep[:, 1:],
                                            self.decision_override['keep_ratios'][k])
            return
        stop = conf > threshold  # Eq. 4: 1 - M~
        if self.diff_conf is not None:
            stop |= conf < self.diff_conf
        keep[:, 1:] &= ~stop  # Eq. 5

    def _record_forward(self, block_tokens, img_hw, hw, n_patch, kept_after, maps) -> None:
        """Records of a forward: the tokens per block (``last_block_tokens``), the realised
        FLOPs (patch embedding, blocks, auxiliary heads) and the kept ratios."""
        counts = torch.stack(block_tokens, 1).to(torch.float64)  # [B, depth], cls included
        b = counts.shape[0]
        self.last_block_tokens = counts
        # every block's FLOPs are a + b n + c n^2 in its token count: all blocks at once
        coef = self._block_coefficients(counts.device)  # [3, depth]
        const = float(self.patch_embed.flops(img_hw)) + len(self.aux_heads) * float(
            self.aux_head_flops(hw))
        flops = (counts * coef[2] + coef[1]).mul_(counts).sum(1) + (coef[0].sum() + const)
        static = float(self.static_flops(img_hw))
        stats = {
            'kept_ratio': (counts - 1).mean(1) / n_patch,
            'flops_ratio': flops / static,
        }
        for k, v in enumerate(kept_after):
            stats[f'kept_ratio_d{k}'] = v
        self.record_dynamic(flops, stats, None, maps)

    def _block_coefficients(self, device) -> torch.Tensor:
        """``[3, depth]`` float64: ``a, b, c`` of every block's FLOPs ``a + b n + c n^2`` in its
        token count ``n`` (:class:`~mmdyn.analysis.flops.CountPolynomial`), on ``device``."""
        polys = self.__dict__.get('_block_polys')
        if polys is None:
            polys = [fl.CountPolynomial.fit(blk.flops) for blk in self.blocks]
            self.__dict__['_block_polys'] = polys
        key = ('dovit-blocks', tuple((p.a, p.b, p.c) for p in polys), device_key(device))
        return constant(key, lambda: torch.tensor(
            [[p.a for p in polys], [p.b for p in polys], [p.c for p in polys]],
            dtype=torch.float64, device=device))

    @staticmethod
    def confidence_levels(conf: torch.Tensor) -> torch.Tensor:
        """Integer confidence levels (``long``, 0 to ``len(CONF_LEVEL_EDGES)``) of a confidence
        map: the form ``last_maps['conf_k']`` takes, since decision maps hold small integers
        that the visualizer colours one per value (the raw confidences of the last forward are
        in ``last_confidences``). Level ``j`` holds ``CONF_LEVEL_EDGES[j-1] < conf <=
        CONF_LEVEL_EDGES[j]``."""
        edges = torch.tensor(CONF_LEVEL_EDGES, dtype=conf.dtype, device=conf.device)
        return torch.bucketize(conf, edges)

    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """One cell per patch; ``keep_k`` 0/1, ``conf_k`` confidence levels."""
        return self.patch_size, key.startswith('keep_')

    OVERRIDE_KEYS = ('keep_ratios', )
    REMOVED_ARGUMENTS = removed_override_arguments(forced_keep_ratios='keep_ratios')

    def _set_decision_override(self, spec: Optional[dict]) -> Optional[dict]:
        """The DoViT key of :attr:`decision_override` (see the class docstring)."""
        if spec is None:
            return None
        n = len(self.decision_layers)
        r = spec['keep_ratios']
        r = (r, ) * n if isinstance(r, (int, float)) and not isinstance(r, bool) else tuple(r)
        if len(r) != n:
            raise ValueError(f'DoViT: decision_override keep_ratios has {len(r)} entries, one '
                             f'per decision layer ({n}) is needed')
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
               for v in r):
            raise ValueError(f'DoViT: decision_override keep_ratios must be floats in [0, 1], '
                             f'got {r}')
        if any(b > a for a, b in zip(r, r[1:])):
            raise ValueError(f'DoViT: decision_override keep_ratios must be non-increasing '
                             f'(stops are cumulative), got {r}')
        return dict(keep_ratios=tuple(float(v) for v in r))

    @staticmethod
    def _forced_keep(conf: torch.Tensor, keep: torch.Tensor, ratio: float) -> torch.Tensor:
        """Keep mask ``[B, N]`` with exactly ``round(ratio * N)`` tokens per image: the least
        confident of those kept in ``keep`` (ties: the first position)."""
        n = conf.shape[1]
        m = int(round(ratio * n))
        score = conf.double().masked_fill(~keep, float('inf'))
        order = torch.sort(score, dim=1, stable=True).indices[:, :m]
        out = torch.zeros_like(keep)
        out.scatter_(1, order, True)
        return out & keep

    def _block_rows(self) -> List[Dict[str, float]]:
        """Rows of :meth:`block_table`: per block of the last forward, averaged over its images
        (the paper's Fig. 6): ``block`` (``'blocks.<i>'``), ``tokens`` (kept
        tokens, class token included), ``kept_ratio`` (kept patch tokens / patch tokens) and
        ``flops`` (MACs of the block at those counts; 1 FLOP = 1 multiply-add, the project's
        unit). The patch embedding and the auxiliary heads (:meth:`aux_head_flops` each) are
        not blocks: they add to the sum of ``flops`` to give ``last_flops``."""
        if self.last_block_tokens is None:
            raise RuntimeError('DoViT.block_table: run a forward first')
        counts = self.last_block_tokens
        n_patch = self.last_confidences[0][0].numel()
        rows = []
        for i, blk in enumerate(self.blocks):
            c = counts[:, i]
            rows.append(dict(block=f'blocks.{i}', tokens=float(c.mean()),
                             kept_ratio=float(((c - 1) / n_patch).mean()),
                             flops=float(blk.flops(c).mean())))
        return rows

    @staticmethod
    def _merge(x: torch.Tensor, stopped: torch.Tensor, agg_rate: float = 0.0) -> torch.Tensor:
        """Eq. 8: ``cls <- (cls + mean(stopped tokens)) / 2`` for the images whose stopped
        tokens are more than ``agg_rate`` of their ``N + 1`` tokens (class token included)."""
        w = stopped.to(x.dtype).unsqueeze(-1)  # [B, N, 1]
        cnt = w.sum(1)  # [B, 1]
        mean = (x[:, 1:] * w).sum(1) / cnt.clamp_min(1)
        cls = x[:, 0]
        merge = (cnt > 0) & (cnt / x.shape[1] > agg_rate)
        new_cls = torch.where(merge, (cls + mean) / 2, cls)
        return torch.cat([new_cls.unsqueeze(1), x[:, 1:]], dim=1)
