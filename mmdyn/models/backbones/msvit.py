"""MSViT: dynamic mixed-scale tokenization for ViT / DeiT (Havtorn et al., ICCV-W 2023).

Every ``S_c x S_c`` region of the image (coarse scale, default 32) is tokenized either as one
coarse token or as ``(S_c / S_f)^2`` fine tokens (fine scale, default 16). A light gate decides
per region from its pixels; the transformer then runs on the mixed set of tokens.

Tokenizer (paper Sec. 2.1)
    * gate: a 4-layer MLP on the flattened pixels of each coarse region (``3 * S_c^2`` inputs),
      with a gate-specific learned position encoding added after its first layer; its output
      ``m`` is the probability that the region is *fine*. The last bias is set so that every
      region starts fine (``init_fine_prob``, default 0.99).
    * training: Gumbel-Sigmoid (temperature ``tau``, default 0.3) with a straight-through hard
      decision; eval: ``sigmoid(logit) > threshold`` (0.5).
    * masks: a region's coarse token is active iff the region is not fine, its fine tokens are
      active iff it is (``fine mask = 1 - coarse mask of the parent region``).
    * embeddings are defined at the fine scale only: coarse patches are resized to ``S_f``
      (``coarse_resize_mode``: ``'area'`` = the mean of each ``r x r`` pixel block, which for
      ``r = 2`` is exactly bilinear resizing by one half) and embedded with the same patch
      embedding; coarse position embeddings are the fine table linearly (bilinearly)
      interpolated to the coarse grid.

Transformer on mixed tokens (Sec. 2.3)
    * training with a trainable gate: masked attention (Eq. 10, the hard mask multiplies the
      exponentiated logits, so the straight-through gradient reaches the gate through every
      attention; ``TransformerBlock.forward_masked``) with adaptive trimming: each image's
      tokens are ordered active first and the batch is trimmed to the largest active count of
      the batch.
    * eval (and training with a frozen gate, where the mask carries no gradient): only each
      image's active tokens run, gathered into a padded token set (key padding mask).
    * ``force_full``: every region fine, the static ViT/16 with the same weights.

Output
    Mixed tokens are put back on the fine grid by copying every coarse token into its
    ``r x r`` fine positions (paper appendix E.1): ``'featmap'`` gives NCHW maps on the fine
    grid (mmseg's Segmenter head), ``'cls_token'`` the cls token, ``'raw'`` ``[B, 1 + Nf, C]``.

Inputs whose sides are not multiples of ``S_c`` are zero-padded at the bottom/right to the next
multiple (``pad_input=True``, the default; outputs then cover the padded grid) or refused with
an error (``pad_input=False``); never cropped.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from mmdyn.analysis import flops as fl
from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from mmdyn.utils.errors import UserValueError
from ..layers.attention import nlc_to_nchw
from ..layers.embed import resize_pos_embed
from ..layers.grad_scale import scale_grad
from ..layers.gates import (GumbelSigmoidGate, binary_eval, gumbel_sigmoid_st,
                            straight_through)
from ..layers.region_pool import region_grid, region_ids
from ..layers.token_sets import gather_tokens, make_token_set, scatter_tokens
from ..losses.gate_losses import (BatchShapingLoss, GeneralizedBatchShapingLoss,
                                  L0SparsityLoss)
from ..utils.checks import check_images, check_loss_weight
from ..utils.dynamic import (DynamicModuleMixin, evenly_spaced, image_hw,
                             removed_override_arguments)
from .vit import ViT

__all__ = ['MSViT', 'MixedScaleGate']

GATE_LOSSES = ('l0', 'bas', 'gbas')


def _raw_state_dict(ckpt) -> dict:
    """The tensor dict of a checkpoint, keys untouched (no prefix stripped)."""
    from mmdyn.utils.checkpoint import unwrap_state_dict
    return unwrap_state_dict(ckpt)


class MixedScaleGate(nn.Module):
    """The scale gate: a 4-layer MLP per coarse region with a learned position encoding.

    ``Linear(3 S_c^2, hidden) + pos -> GELU -> Linear(hidden, hidden) -> GELU ->
    Linear(hidden, hidden) -> GELU -> Linear(hidden, 1)``; the three last layers are the
    projection of a :class:`GumbelSigmoidGate` (which holds ``tau`` and ``threshold``).

    Args:
        in_channels (int): Image channels.
        coarse_size (int): ``S_c``.
        grid (tuple): Coarse grid the position encoding is laid out for.
        hidden_dims (int): MLP width.
        num_layers (int): Linear layers (>= 2). Default 4.
        tau (float): Gumbel-Sigmoid temperature.
        threshold (float): Eval threshold on ``sigmoid(logit)``.
        init_fine_prob (float): Initial probability of "fine" (last bias ``logit(p)``).
    """

    def __init__(self, in_channels: int, coarse_size: int, grid: Tuple[int, int],
                 hidden_dims: int = 104, num_layers: int = 4, tau: float = 0.3,
                 threshold: float = 0.5, init_fine_prob: float = 0.99):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f'the gate MLP needs at least 2 layers, got {num_layers}')
        if not 0. < init_fine_prob < 1.:
            raise ValueError(f'init_fine_prob must be in (0, 1), got {init_fine_prob}')
        self.in_features = in_channels * coarse_size * coarse_size
        self.coarse_size = coarse_size
        self.hidden_dims = hidden_dims
        self.num_layers = num_layers
        self.grid = tuple(grid)
        self.init_fine_prob = float(init_fine_prob)
        self.fc_in = nn.Linear(self.in_features, hidden_dims)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden_dims))
        layers = []
        for i in range(num_layers - 1):
            out = 1 if i == num_layers - 2 else hidden_dims
            layers += [nn.GELU(), nn.Linear(hidden_dims, out)]
        self.gate = GumbelSigmoidGate(proj=nn.Sequential(*layers), tau=tau, threshold=threshold)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)
        trunc_normal_(self.pos_embed, std=.02)
        last = self.gate.proj[-1]
        last.weight.mul_(0.1)
        p = self.init_fine_prob
        last.bias.fill_(math.log(p / (1 - p)))

    @property
    def tau(self) -> float:
        return self.gate.tau

    @property
    def threshold(self) -> float:
        return self.gate.threshold

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (sides multiples of ``S_c``) -> ``[B, hc, wc, C * S_c^2]``."""
        b, c, h, w = x.shape
        s = self.coarse_size
        x = x.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, h // s, w // s, c * s * s)

    def logits(self, x: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
        """Gate logits ``[B, hc, wc]`` of the coarse regions of image ``x``."""
        r = self.regions(x)
        hc, wc = r.shape[1:3]
        pos = resize_pos_embed(self.pos_embed, self.grid, (hc, wc), 'bilinear')
        h = self.fc_in(r) + pos.reshape(1, hc, wc, self.hidden_dims)
        out = self.gate.proj(h).squeeze(-1)
        return scale_grad(out, grad_scale)

    def flops(self, num_regions) -> int:
        """MACs of the gate on ``num_regions`` regions (biases, GELU, the position add not
        counted)."""
        n = num_regions
        total = fl.linear_flops(n, self.in_features, self.hidden_dims)
        for m in self.gate.proj:
            if isinstance(m, nn.Linear):
                total = total + fl.linear_flops(n, m.in_features, m.out_features)
        return total


@MODELS.register_module()
@check_arguments
class MSViT(DynamicModuleMixin, ViT):
    """ViT / DeiT with dynamic mixed-scale tokenization (see the module docstring).

    Args:
        arch (str | dict): A :class:`ViT` arch, or ``'vit-l'`` / ``'deit-l'`` (1024 dims, 24
            blocks, 16 heads). Default ``'vit-s'``.
        img_size (int | tuple): Size the position tables (fine ViT table, gate table, gBaS
            priors) are laid out for. Default 224.
        patch_size (int): Fine scale ``S_f``. Default 16.
        coarse_size (int): Coarse scale ``S_c``, a multiple of ``S_f`` (> ``S_f``). Default 32.
        gate_cfg (dict): ``hidden_dims`` (104), ``num_layers`` (4), ``tau`` (0.3),
            ``threshold`` (0.5), ``init_fine_prob`` (0.99) of :class:`MixedScaleGate`.
        gate_loss (str | dict | None): ``'l0'`` (Eq. 7), ``'bas'`` (Eq. 8, flattened, relaxed
            Bernoulli prior with mean ``target``), ``'gbas'`` (Eq. 9), or a dict with ``type``
            and extra arguments of the loss (``center_init``, ``hyperprior_std``,
            ``temperature``, ``mode``, ``handle_ties``). ``None``: no gate loss. Default
            ``'gbas'``.
        target (float): ``g*``, the target fraction of fine regions, in (0, 1). Default 0.5.
        loss_weight (float): ``lambda``. Default 4.0.
        adaptive_trimming (bool): Trim training batches to the largest active count.
            Default True.
        freeze_gate (bool): Gate parameters frozen, deterministic decisions, no gate loss
            (the Segmenter setting). Default False.
        gate_checkpoint (str, optional): Load the gate (``tokenizer.*`` keys) from this
            checkpoint (e.g. an ImageNet MSViT) in ``init_weights``.
        gate_checkpoint_prefix (str): Prefix of the backbone in that checkpoint.
            Default ``'backbone.'``.
        coarse_resize_mode (str): ``'area'`` or ``'bilinear'``. Default ``'area'``.
        coarse_pos_mode (str): Interpolation of the fine position table to the coarse grid.
            Default ``'bilinear'``.
        pad_input (bool): Zero-pad inputs to a multiple of ``S_c`` (else raise). Default True.
        decision_override (dict, optional): Decisions imposed instead of the gate's
            (:func:`mmdyn.models.utils.override_decisions` sets the same for a ``with``
            block): ``fine_ratio`` r in [0, 1] (``round(r n)`` of the ``n`` coarse regions
            fine, input-independent, :func:`~mmdyn.models.utils.evenly_spaced` in raster
            order: 0.5 on an even-width grid = alternate columns of regions) or ``fine_map``
            (a ``[hc, wc]`` or ``[B, hc, wc]`` 0/1 tensor, that exact map). The gate still
            runs (its cost is counted and timed), but its output is ignored; no gate loss.
            For benchmarks (``benchmark.py --compare-options
            model.backbone.decision_override.fine_ratio=0.5``) and diagnostics. Default None.
        **kwargs: The other :class:`ViT` arguments.

    Attributes:
        stochastic_gate (bool | None): Gumbel noise in training (None: ``self.training``);
            False gives deterministic straight-through decisions in training.
        gate_grad_mult (float): Multiplies the gradient reaching the gate (schedulable; a
            warm-up of the gate, see configs/msvit/README.md). Default 1.0.
    """
    arch_zoo = dict(ViT.arch_zoo, **{
        'vit-l': dict(embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
        'deit-l': dict(embed_dims=1024, depth=24, num_heads=16, mlp_ratio=4),
    })
    #: what a schedule may set (DynamicScheduleHook refuses a schedule that leaves the range)
    value_ranges = dict(loss_weight=(0.0, None), target=(0.0, 1.0, True, True),
                        gate_grad_mult=(0.0, None))

    def __init__(self,
                 arch: Union[str, dict] = 'vit-s',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 coarse_size: int = 32,
                 gate_cfg: Optional[dict] = None,
                 gate_loss: Union[str, dict, None] = 'gbas',
                 target: float = 0.5,
                 loss_weight: float = 4.0,
                 adaptive_trimming: bool = True,
                 freeze_gate: bool = False,
                 gate_checkpoint: Optional[str] = None,
                 gate_checkpoint_prefix: str = 'backbone.',
                 coarse_resize_mode: str = 'area',
                 coarse_pos_mode: str = 'bilinear',
                 pad_input: bool = True,
                 decision_override: Optional[dict] = None,
                 **kwargs):
        if isinstance(coarse_size, bool) or not isinstance(coarse_size, int) or \
                isinstance(patch_size, bool) or not isinstance(patch_size, int):
            raise TypeError(f'patch_size and coarse_size must be ints, got {patch_size!r}, '
                            f'{coarse_size!r}')
        if patch_size < 1 or coarse_size <= patch_size or coarse_size % patch_size:
            raise ValueError(f'MSViT: the fine scale S_f={patch_size} must divide the coarse '
                             f'scale S_c={coarse_size} (and S_c > S_f)')
        if coarse_resize_mode not in ('area', 'bilinear'):
            raise ValueError(f"coarse_resize_mode must be 'area' or 'bilinear', got "
                             f'{coarse_resize_mode!r}')
        if kwargs.get('patch_pad', 'corner') != 'corner':
            raise ValueError('MSViT needs non-overlapping patches (patch_pad="corner")')
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size, **kwargs)
        self.coarse_size = coarse_size
        self.scale_ratio = coarse_size // patch_size
        self.coarse_resize_mode = coarse_resize_mode
        self.coarse_pos_mode = coarse_pos_mode
        self.pad_input = pad_input
        self.adaptive_trimming = adaptive_trimming
        self.freeze_gate = freeze_gate
        self.gate_checkpoint = gate_checkpoint
        self.gate_checkpoint_prefix = gate_checkpoint_prefix
        self.stochastic_gate: Optional[bool] = None
        self.gate_grad_mult = 1.0
        self.set_decision_override(decision_override)
        self.target = float(target)
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', 'MSViT')
        h, w = self.img_size
        self.coarse_grid = (-(-h // coarse_size), -(-w // coarse_size))
        gcfg = dict(hidden_dims=104, num_layers=4, tau=0.3, threshold=0.5, init_fine_prob=0.99)
        unknown = set(gate_cfg or {}) - set(gcfg)
        if unknown:
            raise KeyError(f'MSViT: unknown gate_cfg keys {sorted(unknown)}')
        gcfg.update(gate_cfg or {})
        self.tokenizer = MixedScaleGate(self.in_channels, coarse_size, self.coarse_grid, **gcfg)
        self.gate_loss = self._build_gate_loss(gate_loss)
        self.reset_dynamic_records()
        self._freeze_gate()

    # ------------------------------------------------------------------ loss settings
    # ``loss_weight`` and ``target`` are the gate loss's own (set on the model, e.g. by
    # DynamicScheduleHook at ``backbone.loss_weight``, they reach the loss it computes)
    @property
    def loss_weight(self) -> float:
        loss = self._modules.get('gate_loss')
        return self._loss_weight if loss is None else loss.loss_weight

    @loss_weight.setter
    def loss_weight(self, value: float) -> None:
        self._loss_weight = check_loss_weight(value, 'loss_weight', 'MSViT')
        loss = self._modules.get('gate_loss')
        if loss is not None:
            loss.loss_weight = self._loss_weight

    @property
    def target(self) -> float:
        return self._target

    @target.setter
    def target(self, value: float) -> None:
        if isinstance(value, bool) or not 0. < float(value) < 1.:
            raise ValueError(f'MSViT: the gate target g* must be in (0, 1), got {value!r}')
        loss = self._modules.get('gate_loss')
        if isinstance(loss, BatchShapingLoss):
            raise UserValueError(
                "MSViT: the 'bas' gate loss builds its prior from the target once; set "
                "`target` in the config (the 'l0' and 'gbas' losses take a new target)")
        self._target = float(value)
        if loss is not None:
            loss.target = self._target

    # ------------------------------------------------------------------ construction
    def _build_gate_loss(self, cfg) -> Optional[nn.Module]:
        if cfg is None:
            return None
        cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
        kind = str(cfg.pop('type', '')).lower()
        if kind not in GATE_LOSSES:
            raise ValueError(f'MSViT: gate_loss type must be one of {GATE_LOSSES}, got {kind!r}')
        if kind == 'l0':
            return L0SparsityLoss(target=self.target, loss_weight=self.loss_weight,
                                  loss_name='loss_gate_l0', **cfg)
        if kind == 'bas':
            temp = cfg.pop('temperature', 0.3)
            return BatchShapingLoss(
                prior=dict(type='RelaxedBernoulli', prob=self.target, temperature=temp),
                per_position=False, loss_weight=self.loss_weight, loss_name='loss_gate_bas',
                **cfg)
        cfg.setdefault('temperature', 0.3)
        cfg.setdefault('hyperprior_std', 0.1)
        return GeneralizedBatchShapingLoss(prior_shape=self.coarse_grid, target=self.target,
                                           loss_weight=self.loss_weight,
                                           loss_name='loss_gate_gbas', **cfg)

    def _freeze_gate(self) -> None:
        if not self.freeze_gate:
            return
        self.tokenizer.eval()
        for p in self.tokenizer.parameters():
            p.requires_grad = False
        if self.gate_loss is not None:
            for p in self.gate_loss.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_gate()
        return self

    def init_weights(self):
        super().init_weights()  # ViT init (and its Pretrained loading) touches every Linear
        pre_keys = set()
        from ..utils.ckpt_convert import find_pretrained_cfg
        pre = find_pretrained_cfg(self.init_cfg)
        if pre is not None:
            # an MSViT checkpoint brings its gate along; otherwise re-initialise the gate
            from ..utils.ckpt_convert import backbone_state_dict, load_checkpoint_file
            ckpt = load_checkpoint_file(pre['checkpoint'])
            p = pre.get('prefix') or ''
            if p:
                p = p if p.endswith('.') else p + '.'
                pre_keys = {k[len(p):] for k in _raw_state_dict(ckpt) if k.startswith(p)}
            else:
                pre_keys = set(backbone_state_dict(ckpt))
        if not any(k.startswith('tokenizer.') for k in pre_keys):
            self.tokenizer.init_weights()
        if self.gate_checkpoint is not None:
            self.load_gate(self.gate_checkpoint, self.gate_checkpoint_prefix)

    def _fit_gate_table(self, pe: torch.Tensor, source: str) -> torch.Tensor:
        """The gate's position table ``pe`` of a checkpoint trained at another size (ImageNet
        224 -> ADE20K 512) resized to this model's coarse grid (bilinear)."""
        own = self.tokenizer.pos_embed
        if pe.shape == own.shape:
            return pe
        side = int(round(math.sqrt(pe.shape[1])))
        if pe.dim() != 3 or side * side != pe.shape[1] or pe.shape[-1] != own.shape[-1]:
            raise ValueError(f'gate position table {tuple(pe.shape)} of {source} does not fit '
                             f'{tuple(own.shape)}')
        return resize_pos_embed(pe, (side, side), self.tokenizer.grid, 'bilinear')

    def _adapt_state_dict(self, sd: dict) -> dict:
        """:meth:`ViT._adapt_state_dict`, and the gate's position table resized as
        :meth:`load_gate` does (an ``init_cfg`` checkpoint of another input size)."""
        sd = super()._adapt_state_dict(sd)
        if 'tokenizer.pos_embed' in sd:
            sd['tokenizer.pos_embed'] = self._fit_gate_table(sd['tokenizer.pos_embed'],
                                                             'the init_cfg checkpoint')
        return sd

    def load_gate(self, filename: str, prefix: str = 'backbone.') -> None:
        """Load the gate (``tokenizer.*``; and the gBaS priors if present) from a checkpoint."""
        from mmengine.logging import MMLogger, print_log
        from ..utils.ckpt_convert import load_checkpoint_file
        sd = _raw_state_dict(load_checkpoint_file(filename))
        p = prefix or ''
        gate = {k[len(p) + len('tokenizer.'):]: v for k, v in sd.items()
                if k.startswith(p + 'tokenizer.')}
        if not gate:
            raise ValueError(f'no gate (keys {p}tokenizer.*) in {filename}')
        if 'pos_embed' in gate:
            gate['pos_embed'] = self._fit_gate_table(gate['pos_embed'], filename)
        self.tokenizer.load_state_dict(gate, strict=True)
        prior = {k[len(p) + len('gate_loss.'):]: v for k, v in sd.items()
                 if k.startswith(p + 'gate_loss.')}
        if prior and self.gate_loss is not None:
            own_sd = self.gate_loss.state_dict()
            prior = {k: v for k, v in prior.items()
                     if k in own_sd and own_sd[k].shape == v.shape}
            self.gate_loss.load_state_dict(prior, strict=False)
        print_log(f'MSViT: loaded the gate from {filename}', MMLogger.get_current_instance())

    # ------------------------------------------------------------------ shapes and FLOPs
    def padded_shape(self, img_shape: Sequence[int]) -> Tuple[int, int]:
        h, w = image_hw(img_shape)
        s = self.coarse_size
        ph, pw = -(-h // s) * s, -(-w // s) * s
        if (ph, pw) != (h, w) and not self.pad_input:
            raise ValueError(f'MSViT: input {h}x{w} is not a multiple of the coarse scale '
                             f'S_c={s} (set pad_input=True to zero-pad it to {ph}x{pw})')
        return ph, pw

    def grids(self, img_shape: Sequence[int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """``(fine grid, coarse grid)`` of an input size (after padding)."""
        h, w = self.padded_shape(img_shape)
        return region_grid((h, w), self.patch_size), region_grid((h, w), self.coarse_size)

    def num_tokens(self, img_shape: Sequence[int]) -> int:
        (hf, wf), _ = self.grids(img_shape)
        return hf * wf + self.num_extra_tokens

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the static ViT/``S_f`` (every region fine, no gate) on the padded input."""
        return ViT.static_flops(self, self.padded_shape(img_shape))

    def flops_breakdown(self, img_shape: Sequence[int] = (224, 224)) -> Dict[str, int]:
        """:meth:`ViT.flops_breakdown` of the padded input (its parts sum to
        :meth:`static_flops`)."""
        return ViT.flops_breakdown(self, self.padded_shape(img_shape))

    def gate_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the gate MLP on every coarse region."""
        _, (hc, wc) = self.grids(img_shape)
        return int(self.tokenizer.flops(hc * wc))

    def overhead_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs a dynamic forward adds to the token-count-dependent blocks: the gate, the fine
        and the coarse patch embeddings (every patch of both scales is embedded)."""
        h, w = self.padded_shape(img_shape)
        r = self.scale_ratio
        return int(self.gate_flops((h, w)) + self.patch_embed.flops((h, w))
                   + self.patch_embed.flops((h // r, w // r)))

    def blocks_flops(self, num_tokens) -> Union[int, torch.Tensor]:
        """MACs of all blocks on ``num_tokens`` tokens (int or per-image tensor), through
        the blocks' summed :class:`~mmdyn.analysis.flops.CountPolynomial` (a few tensor
        operations for a per-image count, not a dozen per block)."""
        poly = self.__dict__.get('_blocks_poly')
        if poly is None:
            poly = sum(fl.CountPolynomial.fit(blk.flops) for blk in self.blocks)
            self.__dict__['_blocks_poly'] = poly
        return poly(num_tokens)

    def dynamic_flops(self, img_shape: Sequence[int], num_tokens) -> Union[int, torch.Tensor]:
        """MACs of a dynamic (gated) forward with ``num_tokens`` tokens (cls included)."""
        return self.overhead_flops(img_shape) + self.blocks_flops(num_tokens)

    def tokens_for(self, fine_map: torch.Tensor) -> torch.Tensor:
        """Token count (cls included) per image of a ``[B, hc, wc]`` fine-region map."""
        k = fine_map.flatten(1).sum(1)
        nc = math.prod(fine_map.shape[1:])
        return self.num_extra_tokens + nc - k + k * self.scale_ratio ** 2

    # ------------------------------------------------------------------ forward
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        check_images(self, x)
        h, w = x.shape[-2:]
        ph, pw = self.padded_shape((h, w))
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h))
        return x

    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """``fine``: one 0/1 cell per coarse region."""
        return self.coarse_size, True

    OVERRIDE_KEYS = ('fine_ratio', 'fine_map')
    REMOVED_ARGUMENTS = removed_override_arguments(force_fine='fine_ratio')

    def _set_decision_override(self, spec: Optional[dict]) -> Optional[dict]:
        """The MSViT keys of :attr:`decision_override` (see the class docstring)."""
        if spec is None:
            return None
        if len(spec) != 1:
            raise ValueError('MSViT: decision_override takes fine_ratio or fine_map, not both')
        f = spec.get('fine_ratio')
        if 'fine_ratio' in spec and (isinstance(f, bool) or not 0. <= float(f) <= 1.):
            raise ValueError(f'MSViT: decision_override fine_ratio must be in [0, 1], got {f}')
        if 'fine_map' in spec and not isinstance(spec['fine_map'], torch.Tensor):
            raise ValueError('MSViT: decision_override fine_map must be a 0/1 tensor')
        return spec

    @staticmethod
    def fine_pattern(grid: Tuple[int, int], fine_ratio: float) -> torch.Tensor:
        """``[hc, wc]`` 0/1 map of ``fine_ratio``: ``round(fine_ratio * hc * wc)`` fine regions
        at the :func:`~mmdyn.models.utils.evenly_spaced` positions of the raster order."""
        n = grid[0] * grid[1]
        k = int(round(float(fine_ratio) * n))
        return evenly_spaced(n, k / n).float().reshape(grid)

    def _forced(self, x: torch.Tensor, logits: torch.Tensor):
        spec = self.decision_override
        b, hc, wc = logits.shape
        if 'fine_map' in spec:
            f = spec['fine_map']
            fmap = f.to(device=logits.device, dtype=logits.dtype)
            if fmap.dim() == 2:
                fmap = fmap[None]
            if fmap.shape[-2:] != (hc, wc) or fmap.shape[0] not in (1, b):
                raise ValueError(f'MSViT: decision_override fine_map {tuple(f.shape)} does not '
                                 f'fit the coarse grid {(hc, wc)} of a batch of {b}')
            fmap = (fmap > 0.5).to(logits.dtype)
        else:
            fmap = self.fine_pattern((hc, wc), spec['fine_ratio']).to(logits)
        return fmap.expand(b, hc, wc).clone()

    def _gate(self, x: torch.Tensor):
        """Fine-region decisions ``[B, hc, wc]`` (float 0/1, straight-through in training
        with a trainable gate), the soft outputs ``m`` and the logits."""
        if self.decision_override is not None:
            logits = self.tokenizer.logits(x).detach()
            decision = self._forced(x, logits)
            return decision, decision, logits
        trainable = self.training and not self.freeze_gate
        logits = self.tokenizer.logits(x, self.gate_grad_mult if trainable else 1.0)
        if not trainable:
            logits = logits.detach() if self.freeze_gate else logits
            out = binary_eval(logits, self.tokenizer.threshold)
            return out.decision, out.soft, logits
        stochastic = self.training if self.stochastic_gate is None else self.stochastic_gate
        if stochastic:
            out = gumbel_sigmoid_st(logits, self.tokenizer.tau)
            return out.decision, out.soft, logits
        soft = torch.sigmoid(logits)
        return straight_through(soft, soft > self.tokenizer.threshold), soft, logits

    def _fine_pos(self, fhw):
        pos = resize_pos_embed(self.pos_embed, self.patch_resolution, fhw, self.interpolate_mode,
                               self.num_extra_tokens)
        return pos[:, :self.num_extra_tokens], pos[:, self.num_extra_tokens:]

    def _extra_tokens(self, b: int, extra_pos: torch.Tensor) -> torch.Tensor:
        if self.cls_token is None:
            return extra_pos.new_zeros(b, 0, self.embed_dims)
        return self.cls_token.expand(b, -1, -1) + extra_pos

    def forward(self, x: torch.Tensor) -> tuple:
        x = self._prepare(x)
        b = x.shape[0]
        e = self.num_extra_tokens
        img_shape = tuple(x.shape[-2:])
        fine, fhw = self.patch_embed(x)
        fhw = tuple(fhw)
        extra_pos, fine_pos = self._fine_pos(fhw)
        fine = fine + fine_pos
        extra = self._extra_tokens(b, extra_pos)
        if self.force_full:
            return self._forward_full(extra, fine, fhw, img_shape)

        r = self.scale_ratio
        chw = region_grid(fhw, r)  # r divides the padded fine grid
        nc, nf = chw[0] * chw[1], fhw[0] * fhw[1]
        decision, soft, logits = self._gate(x)  # [B, hc, wc], 1 = fine
        tokens = torch.cat([extra, self._coarse_tokens(x, chw), fine], dim=1)
        tokens = self.pre_norm(self.drop_after_pos(tokens))

        parent = region_ids(fhw, r, x.device)  # coarse region of every fine token
        fine_up = decision.flatten(1)[:, parent]  # [B, nf]
        mask = torch.cat([decision.new_ones(b, e), 1 - decision.flatten(1),
                          fine_up], dim=1)  # [B, e + nc + nf]
        outs = self._run_mixed(tokens, mask, fine_up, parent, chw, fhw)

        # records
        n_tok = self.tokens_for(decision.detach())
        flops = self.dynamic_flops(img_shape, n_tok.to(torch.float64))
        static = float(self.static_flops(img_shape))
        probs = decision if self.decision_override is not None else torch.sigmoid(logits)
        n_exp = e + nc - probs.flatten(1).sum(1) + probs.flatten(1).sum(1) * r * r
        expected = self.dynamic_flops(img_shape, n_exp) / static
        fine_ratio = decision.detach().flatten(1).mean(1)
        self.record_dynamic(
            flops,
            stats=dict(fine_ratio=fine_ratio, flops_ratio=flops / static,
                       kept_ratio=(n_tok.double() - e) / nf, num_tokens=n_tok.double(),
                       num_patch_tokens=n_tok.double() - e,
                       num_fine_regions=decision.detach().flatten(1).sum(1)),
            expected_cost=expected if self.training else None,
            maps=dict(fine=decision.detach()))
        if (self.training and not self.freeze_gate and self.gate_loss is not None
                and self.decision_override is None):
            if not soft.shape[0]:  # no image: nothing to shape (a zero on the graph)
                loss = soft.sum()
            elif isinstance(self.gate_loss, GeneralizedBatchShapingLoss):
                loss = self.gate_loss(soft)
            else:
                loss = self.gate_loss(soft.flatten(1))
            self.set_aux_losses({self.gate_loss.loss_name: loss})
        else:  # no gate loss this forward: none of an earlier one stays behind
            self.aux_losses = {}
        return tuple(outs)

    def _coarse_tokens(self, x: torch.Tensor, chw) -> torch.Tensor:
        """Patch tokens (with their positions) of the image resized to the coarse grid
        ``chw`` of ``S_f`` patches."""
        e = self.num_extra_tokens
        if self.coarse_resize_mode == 'area':
            # the input is padded to whole coarse patches (``r`` fine patches a side), so area
            # resizing is the mean of every ``r x r`` pixel block: an average pool (the same
            # values; ``F.interpolate(mode='area')`` is an adaptive pool, which inductor cannot
            # lower at a symbolic size)
            coarse_img = F.avg_pool2d(x, self.scale_ratio)
        else:
            size = (chw[0] * self.patch_size, chw[1] * self.patch_size)
            coarse_img = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        coarse, _ = self.patch_embed(coarse_img)
        coarse_pos = resize_pos_embed(self.pos_embed, self.patch_resolution, chw,
                                      self.coarse_pos_mode, e)[:, e:]
        return coarse + coarse_pos

    def _run_mixed(self, tokens, mask, fine_up, parent, chw, fhw) -> list:
        """The blocks on the active tokens of ``tokens`` (``mask`` 1; in gate training all
        tokens or the trimmed set, weighted by the differentiable mask); the outputs of
        ``out_indices`` on the fine grid."""
        b = tokens.shape[0]
        keep = mask.detach() > 0.5
        ts = make_token_set(keep)  # active tokens first (original order), trimmed to batch max
        masked = self.training and not self.freeze_gate and mask.requires_grad
        if masked:
            if self.adaptive_trimming:
                idx = ts.index
            else:
                idx = torch.arange(mask.shape[1], device=tokens.device).expand(b, -1)
            h = tokens.gather(1, idx[..., None].expand(-1, -1, self.embed_dims))
            m = mask.gather(1, idx)
        else:
            h = gather_tokens(tokens, ts)
            kpm = ts.key_padding_mask
        outs = []
        for i, blk in enumerate(self.blocks):
            if masked:
                h = blk.forward_masked(h, m)
            else:
                h = blk(h, key_padding_mask=kpm)
            if i == self.depth - 1:
                h = self.norm(h)
            if i in self.out_indices:
                if masked:
                    full = h.new_zeros(b, mask.shape[1], self.embed_dims).scatter(
                        1, idx[..., None].expand(-1, -1, self.embed_dims), h)
                else:
                    full = scatter_tokens(h, ts, h.new_zeros(b, mask.shape[1], self.embed_dims))
                outs.append(self._unmix(full, fine_up, parent, chw, fhw))
        return outs

    def _unmix(self, full: torch.Tensor, fine_up: torch.Tensor, parent: torch.Tensor, chw,
               fhw) -> torch.Tensor:
        """Mixed tokens ``[B, e + nc + nf, C]`` (by original position) -> the output on the
        fine grid, every coarse token copied into its ``r x r`` fine positions (``parent``:
        :func:`region_ids` of the fine grid, ``fine_up``: ``[B, nf]`` fine mask)."""
        e = self.num_extra_tokens
        nc = chw[0] * chw[1]
        coarse = nlc_to_nchw(full[:, e:e + nc][:, parent], fhw)
        fine = nlc_to_nchw(full[:, e + nc:], fhw)
        w = fine_up.reshape(-1, 1, *fhw).to(fine.dtype)
        grid = w * fine + (1 - w) * coarse
        if self.out_type == 'featmap':
            return grid
        if self.out_type == 'cls_token':
            return full[:, 0]
        return torch.cat([full[:, :e], grid.flatten(2).transpose(1, 2)], dim=1)

    def _forward_full(self, extra, fine, fhw, img_shape) -> tuple:
        """Every region fine: the static ViT/``S_f`` computation."""
        b = fine.shape[0]
        h = self.pre_norm(self.drop_after_pos(torch.cat([extra, fine], dim=1)))
        outs = []
        for i, blk in enumerate(self.blocks):
            h = blk(h, fhw)
            if i == self.depth - 1:
                h = self.norm(h)
            if i in self.out_indices:
                outs.append(self.format_output(h, fhw))
        static = float(self.static_flops(img_shape))
        ones = fine.new_ones(b)
        _, chw = self.grids(img_shape)
        n = self.num_tokens(img_shape)
        self.record_dynamic(
            torch.full((b, ), static, dtype=torch.float64),
            stats=dict(fine_ratio=ones, flops_ratio=ones, kept_ratio=ones,
                       num_tokens=ones * n, num_patch_tokens=ones * (n - self.num_extra_tokens),
                       num_fine_regions=ones * chw[0] * chw[1]),
            maps=dict(fine=fine.new_ones(b, *chw)))
        return tuple(outs)

    def _block_rows(self) -> List[Dict[str, float]]:
        """Rows of :meth:`block_table`: per transformer block of the last forward, averaged over
        its images: ``block`` (``'blocks.<i>'``), ``tokens`` (tokens the block
        ran, cls included), ``kept_ratio`` (patch tokens / fine patch tokens) and ``flops``
        (MACs of the block at each image's count). Every block runs the same tokens (the scale
        is chosen once, before the first block); the gate and the two patch embeddings
        (``overhead_flops``) add to the sum of ``flops`` to give ``last_flops``."""
        if self.last_flops is None or 'num_tokens' not in self.last_stats:
            raise RuntimeError('MSViT.block_table: run a forward first')
        n = self.last_stats['num_tokens'].double().cpu()
        kept = float(self.last_stats['kept_ratio'].double().mean())
        return [dict(block=f'blocks.{i}', tokens=float(n.mean()), kept_ratio=kept,
                     flops=float(torch.as_tensor(blk.flops(n), dtype=torch.float64).mean()))
                for i, blk in enumerate(self.blocks)]

    def flops_summary(self, img_shape: Sequence[int] = (224, 224),
                      fine_ratio: float = 0.5) -> Dict[str, float]:
        """Static / gate / dynamic MACs for a given fraction of fine regions (analytic)."""
        _, (hc, wc) = self.grids(img_shape)
        k = fine_ratio * hc * wc
        n = self.num_extra_tokens + hc * wc - k + k * self.scale_ratio ** 2
        return dict(static=float(self.static_flops(img_shape)),
                    gate=float(self.gate_flops(img_shape)),
                    num_tokens=float(n), dynamic=float(self.dynamic_flops(img_shape, float(n))))
