"""DiT: dynamic token routing over a grid of scales and depths (PVTv2-based reconstruction).

No official code exists; this is a reconstruction of Sec. 3 of "DiT: Efficient Vision
Transformers with Dynamic Token Routing". Every choice the paper leaves open is listed in
``configs/dit/README.md``.

Routing space (Fig. 2, Eq. 4), ``S = 4`` scales (strides 4, 8, 16, 32) x ``M`` stages:

* node ``F[i][j]`` (scale ``i``, column ``j = 0..M``); ``F[0][0]`` is the stem (7x7/4
  overlapping patch embedding) of the image;
* ``B[i][j]``: ``F[i][j] -> F[i][j+1]`` (``j < M``), a PVTv2 stage of scale ``i`` (the PVTv2
  depth, width, heads, SR ratio and MLP ratio of that scale) applied to the tokens its row gate
  keeps; the others take the identity path;
* ``P[i][j]``: ``F[i][j] -> F[i+1][j]`` (``i < 3``, ``j = 0..M``), LayerNorm + PVTv2 overlapping
  patch embedding (3x3/2), taken when its column gate is on;
* ``F[i][j] = G*B(F[i][j-1]) + (1-G)*F[i][j-1] + g_col * P(F[i-1][j])`` (Eq. 4); a node no
  path reaches is absent and nothing downstream of it runs ("early stopping"); nor does a node
  from which no path leads to an output node (only with fewer ``out_indices``).

The "PVTv2 path" is the staircase ``F[0][0] -B-> F[0][1] -P-> F[1][1] -B-> F[1][2] -P-> ...
-> F[3][4]`` (``M = 4``): with every row gate on and only the column gates of that path on, the
network computes PVTv2 of the same size exactly. The dense outputs (``out_nodes='pvt'``,
default) are read where PVTv2 reads its stages: scale ``i`` at column ``min(i + 1, M)`` (scale 3
at column ``M``); ``out_nodes='last'`` reads every scale at the last column ``M``.
"""
import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList

from mmdyn.analysis.flops import CountPolynomial
from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from mmdyn.utils.errors import UserValueError
from ..layers.attention import channels_last_convs_, nlc_to_nchw
from ..layers.embed import overlap_patch_embed
from ..layers.ffn import SUBSET_MODES, MixFFN
from ..layers.gates import GumbelSoftmaxGate, categorical_eval, gumbel_softmax_st
from ..layers.token_sets import make_token_set
from ..layers.transformer_blocks import PVTBlock, drop_path_rates
from ..losses.budget_loss import BudgetLoss
from ..utils.ckpt_convert import (find_pretrained_cfg, load_converted,
                                  pretrained_init_cfg, pvt_to_mmdyn)
from ..utils.checks import check_loss_weight
from ..utils.dynamic import (DynamicModuleMixin, evenly_spaced,
                             removed_override_arguments)
from ..utils.min_size import pad_to_min_size, padded_input_shape
from .pvt import PVTv2, pvt_style_init

__all__ = ['DiT']

NUM_SCALES = 4
# routing ablations (Tables 6-8): (row rule, column rule)
ROUTINGS = {
    'dynamic': ('dynamic', 'dynamic'),   # the method
    'fully': ('on', 'on'),               # every gate 1 (Table 6 "Fully")
    'static': ('static', 'static'),      # learned masks fixed per position (Table 6 "Static")
    'random': ('random', 'random'),      # random masks at a given keep ratio (Table 7)
    'attention': ('attention', 'dynamic'),  # top tokens by attention received (Table 7)
    'scale_only': ('on', 'dynamic'),     # dynamic scale, full depth (Table 8)
    'depth_only': ('dynamic', 'pvt'),    # PVTv2 path, dynamic depth (Table 8)
    'pvt': ('on', 'pvt'),                # PVTv2 itself (exactness reference)
}
# budget mu = DiT GFLOPs / PVTv2 GFLOPs of Table 1
DEFAULT_MU = {'b1': 2.0 / 2.1, 'b2': 3.8 / 4.0, 'b3': 6.8 / 6.9, 'b4': 9.9 / 10.1,
              'b5': 10.3 / 11.8}


class DownPath(BaseModule):
    """``P[i][j]``: LayerNorm of scale ``i`` then an overlapping 3x3/2 patch embedding."""

    def __init__(self, in_dims: int, out_dims: int, kernel_size: int, norm_cfg: dict):
        super().__init__()
        self.norm = build_norm_layer(norm_cfg, in_dims)[1]
        self.embed = overlap_patch_embed(in_dims, out_dims, kernel_size, 2, norm_cfg=norm_cfg)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        return self.embed(nlc_to_nchw(self.norm(x), hw))[0]

    def flops(self, in_hw: Sequence[int]) -> int:
        return self.embed.flops(in_hw)


class StaticRowMask(nn.Module):
    """Learned per-position logits ``[2, h, w]`` (resized to the map), no input dependence."""

    def __init__(self, hw: Tuple[int, int], init_on: float):
        super().__init__()
        p = torch.tensor([1 - init_on, init_on]).log()
        self.logits = nn.Parameter(p.view(2, 1, 1).repeat(1, *hw).clone())
        self.tau = 1.0

    def forward(self, batch: int, hw: Sequence[int]) -> torch.Tensor:
        lg = F.interpolate(self.logits[None], size=tuple(hw), mode='nearest')[0]
        lg = lg.flatten(1).t()[None].expand(batch, -1, -1)
        if self.training:
            return gumbel_softmax_st(lg, self.tau).decision[..., 1]
        return categorical_eval(lg).decision[..., 1]


class StaticColMask(nn.Module):
    """A learned on/off logit pair for one column path."""

    def __init__(self, init_on: float):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1 - init_on, init_on]).log())
        self.tau = 1.0

    def forward(self, batch: int) -> torch.Tensor:
        lg = self.logits[None].expand(batch, -1)
        if self.training:
            return gumbel_softmax_st(lg, self.tau).decision[..., 1]
        return categorical_eval(lg).decision[..., 1]


def _node_input(left, up):
    """Value and reach indicator of a node from its row input ``left`` and column input ``up``
    (each ``(value, alive)`` or None): ``F = B(left) + g*P(up)``, reached if either path
    carries it (``1 - (1 - a_left)(1 - a_up)``, which keeps the column gates' gradient)."""
    if left is None and up is None:
        return None
    if up is None:
        return left
    if left is None:
        return up
    return left[0] + up[0], 1 - (1 - left[1]) * (1 - up[1])


class _Accounts:
    """What one DiT forward records (per image): realised MACs, the expected cost of Eq. 5-6,
    kept tokens, valid parameters (eval), nodes reached, decision maps and per-part MACs."""

    def __init__(self, model: 'DiT', tokens: torch.Tensor, costs: dict):
        b, dev = tokens.shape[0], tokens.device
        self.model, self.costs, self.b, self.dev = model, costs, b, dev
        self.flops = torch.full((b, ), float(costs['stem']), dtype=torch.float64, device=dev)
        # at least float32: under fp16 autocast the MAC counts overflow half precision
        self.exp_cost = torch.full((b, ), float(costs['stem']), device=dev,
                                   dtype=torch.promote_types(tokens.dtype, torch.float32))
        self.kept_tok = torch.zeros(b, dtype=torch.float64, device=dev)
        self.all_tok = sum(h * w for h, w in costs['shapes']) * model.num_stages
        self.params = model.param_groups() if not model.training else None
        self.vparams = None if self.params is None else torch.full(
            (b, ), float(self.params['stem']), dtype=torch.float64, device=dev)
        self.maps, self.parts = {}, {}  # parts: ('B' | 'P', i, j) -> MACs per image
        self.reached = torch.zeros(b, NUM_SCALES, model.num_stages + 1, dtype=torch.bool,
                                   device=dev)
        self.a_hard = None

    def absent_row(self, i, j, hw):
        self.maps[f'row_{i}_{j}'] = torch.zeros(self.b, *hw, device=self.dev)

    def absent_col(self, i, j):
        self.maps[f'col_{i}_{j}'] = torch.zeros(self.b, 1, 1, device=self.dev)

    def absent(self, i, j, hw):
        """Node ``F[i][j]`` not reached (or pruned): its paths do not run."""
        if j < self.model.num_stages:
            self.absent_row(i, j, hw)
        if i < NUM_SCALES - 1:
            self.absent_col(i, j)

    def reach(self, i, j, a):
        self.a_hard = (a > 0).to(torch.float64).detach()
        self.reached[:, i, j] = self.a_hard > 0

    def row(self, i, j, hw, g, a):
        """``B[i][j]`` ran with decisions ``g`` (``[B, N]``) on a node reached by ``a``."""
        m, a_hard = self.model, self.a_hard
        kept = (g > 0).sum(1)
        self.kept_tok += kept.double()
        blk_f = self.costs['row_poly'][i][j](kept)  # the blocks' MACs on ``kept`` tokens
        blk_f = torch.where(kept > 0, blk_f, torch.zeros_like(blk_f))
        gate_f = m._row_gate_flops(i, j, hw, self.costs)
        self.flops += blk_f + gate_f * a_hard
        self.parts[('B', i, j)] = (blk_f + gate_f * a_hard).detach()
        dt = self.exp_cost.dtype  # the decisions may be half precision (autocast)
        self.exp_cost = self.exp_cost + a.to(dt) * (
            g.to(dt).mean(1) * self.costs['row'][i][j] + gate_f)
        self.maps[f'row_{i}_{j}'] = g.detach().reshape(self.b, *hw)
        if self.vparams is not None:
            self.vparams += (kept > 0).double() * self.params['stages'][i][j]
            if m._row_gate_runs() or (m.row_mode == 'static' and not m._imposed()):
                self.vparams += a_hard * self.params['row_gates'][i][j]

    def col(self, i, j, c, a):
        """``P[i][j]``'s decisions ``c`` (``[B]``) on a node reached by ``a``."""
        m, a_hard = self.model, self.a_hard
        gate_f = self.costs['col_gate'][i] if m._col_gate_runs() else 0
        c_hard = (c > 0).double().detach()
        self.flops += c_hard * self.costs['col'][i][j] + gate_f * a_hard
        self.parts[('P', i, j)] = c_hard * self.costs['col'][i][j] + gate_f * a_hard
        dt = self.exp_cost.dtype
        self.exp_cost = self.exp_cost + c.to(dt) * self.costs['col'][i][j] + a.to(dt) * gate_f
        self.maps[f'col_{i}_{j}'] = c.detach().reshape(self.b, 1, 1)
        if self.vparams is not None:
            self.vparams += c_hard * self.params['downs'][i][j]
            if m._col_gate_runs() or (m.col_mode == 'static' and not m._imposed()):
                self.vparams += a_hard * self.params['col_gates'][i][j]

    def finish(self, img_shape) -> torch.Tensor:
        """Record everything on the model; returns the expected cost ratio ``C_space/C_base``."""
        m, S, M = self.model, NUM_SCALES, self.model.num_stages
        ratio = self.exp_cost / self.costs['base']
        stats = dict(kept_ratio=self.kept_tok / max(self.all_tok, 1),
                     flops_ratio=self.flops / m.static_flops(img_shape),
                     pvt_ratio=self.flops / self.costs['base'])
        if self.vparams is not None:
            for i in m.out_indices:  # output norms of the outputs that were reached
                self.vparams += self.reached[:, i, m.out_column(i)].double() * \
                    self.params['out_norms'][i]
            m.last_valid_params = self.vparams
            stats['valid_params'] = self.vparams
            stats['param_ratio'] = self.vparams / self.params['total']
        # panels ordered scale-major (rows of Fig. 3: one scale, M stages), then column gates
        order = [f'row_{i}_{j}' for i in range(S) for j in range(M)] + [
            f'col_{i}_{j}' for i in range(S - 1) for j in range(M + 1)]
        m.last_reached = self.reached
        m._last_part_flops = self.parts
        m.record_dynamic(self.flops, stats, expected_cost=ratio if m.training else None,
                         maps={k: self.maps[k] for k in order})
        return ratio


#: input sizes whose edge costs :meth:`DiT._costs` keeps at most (multi-scale inputs)
COST_CACHE_ENTRIES = 256


@MODELS.register_module()
@check_arguments
class DiT(DynamicModuleMixin, BaseModule):
    """DiT backbone (dynamic token routing over scales x stages, PVTv2 blocks).

    Args:
        arch (str | dict): ``'b1' .. 'b5'`` (PVTv2-B1..B5 per-scale settings) or a dict with
            ``embed_dims, depths, num_heads, mlp_ratios, sr_ratios`` (4 entries each).
        num_stages (int): ``M``, routing stages (columns) per scale. Default 4.
        routing (str): One of :data:`ROUTINGS` (``'dynamic'`` is the method; the others are
            the ablations of Tables 6-8). Default ``'dynamic'``.
        out_nodes (str): ``'pvt'`` (scale ``i`` read at column ``min(i+1, M)``, scale 3 at
            ``M``; equals PVTv2 on the PVTv2 path) or ``'last'`` (column ``M``).
        out_indices (Sequence[int]): Scales to output. Default (0, 1, 2, 3).
        budget (float, optional): ``mu`` in (0, 1] of Eq. 6 (cost / PVTv2 cost). Default: the
            Table 1 ratio of the size (e.g. 0.95 for B2).
        budget_weight (float): ``lambda_C`` of Eq. 7. Default 0.8.
        tau (float): Gumbel-Softmax temperature of every gate. Default 1.0.
        gate_momentum (float, optional): EMA momentum of the gate weights used in eval
            (Eq. 3; updated by :class:`mmdyn.GateMomentumHook`). Default 0.999.
        row_init_on (float | Sequence[float]): Initial probability that a row gate computes
            a token (the paper: "initially all elements of the decision mask are 1"). 0.98. A
            pair sets it for the stages on / off the PVTv2 path (``B[i][i]`` / the others),
            e.g. ``(0.98, 0.02)`` to fine-tune from PVTv2 weights at PVTv2's cost.
        col_init_on (Sequence[float]): Initial "on" probability of the column gates on / off
            the PVTv2 path. Default (0.98, 0.5).
        random_keep (Sequence[float]): Row / column keep probabilities of ``routing='random'``;
            the row entry is also the kept fraction of ``routing='attention'``.
        static_size (int): Image size the ``'static'`` masks are laid out for. Default 224.
        decision_override (dict, optional): Decisions imposed instead of the routing rule's
            (:func:`mmdyn.models.utils.override_decisions`, which sets the same for a ``with``
            block): ``keep_ratio`` r in (0, 1] (no gate runs; every reached stage of ``N``
            tokens computes the same :func:`~mmdyn.models.utils.evenly_spaced` ``floor(N r)``
            of them) with ``columns`` (``'pvt'``, default: the PVTv2 staircase's column paths
            only, nodes that cannot reach an output pruned; ``'all'``), and/or ``decisions``
            (``{('row', i, j): [B, N] 0/1, ('col', i, j): [B] 0/1}``, ranked before
            ``keep_ratio``). For speed and cost checks (``dit-b2-forced-half``). Default None.
        sparse_dwconv (str): How eval computes the MixFFN depth-wise convolution of a token
            subset (zeros at the skipped positions, the same result in every mode), i.e. the
            ``mode`` of :meth:`MixFFN.subset_plan`: ``'fused'`` (default) and ``'gather'``
            compute it only at the kept positions, each kept token reading its ``k*k``
            neighbours among the kept tokens (work proportional to the kept count, as the FLOPs
            count it); ``'fused'`` as one ``torch.compile``-d operation
            (:func:`~mmdyn.models.layers.ffn.fused_neighbour_dwconv`: compiled once per process
            on first use, the eager ``'gather'`` loop where it cannot compile), ``'gather'`` as
            an eager copy and multiply-add per neighbour. ``'map'`` writes the kept rows onto one
            zero channels-last map per stage, runs the convolution on the whole map and reads
            the kept rows back (more work than the FLOPs record); ``'core'`` is the core
            MixFFN's ``index=`` path, through the whole block.
        drop_path_rate (float): Stochastic depth, linear over the PVTv2 path's blocks; block
            ``k`` of scale ``i`` gets the same rate in every column. Default 0.1.
        in_channels, qkv_bias, drop_rate, attn_drop_rate, norm_cfg, act_cfg: as PVTv2.
        init_cfg (dict, optional): ``Pretrained`` with a DiT checkpoint, or a PVTv2 checkpoint
            (any layout :func:`pvt_to_mmdyn` reads), whose stage ``i`` is copied into every
            ``B[i][j]`` and whose patch embedding ``i+1`` into every ``P[i][j]``
            (``tile_pretrained=True``) or only into the PVTv2 path (False).
    """

    arch_zoo = PVTv2.arch_zoo

    def __init__(self,
                 arch: Union[str, dict] = 'b2',
                 num_stages: int = 4,
                 routing: str = 'dynamic',
                 out_nodes: str = 'pvt',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 budget: Optional[float] = None,
                 budget_weight: float = 0.8,
                 tau: float = 1.0,
                 gate_momentum: Optional[float] = 0.999,
                 row_init_on: Union[float, Sequence[float]] = 0.98,
                 col_init_on: Sequence[float] = (0.98, 0.5),
                 random_keep: Sequence[float] = (0.5, 0.5),
                 static_size: int = 224,
                 decision_override: Optional[dict] = None,
                 sparse_dwconv: str = 'fused',
                 tile_pretrained: bool = True,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        # ------------------------------------------------------------ validation
        self.arch_name, settings = self._parse_dit_arch(arch)
        row_init_on = tuple(row_init_on) if isinstance(row_init_on, (list, tuple)) else (
            row_init_on, row_init_on)
        if len(row_init_on) != 2 or len(col_init_on) != 2:
            raise ValueError('DiT: row_init_on must be a float or a pair, col_init_on a pair; '
                             f'got {row_init_on}, {col_init_on}')
        budget = self._check_routing_args(num_stages, routing, out_nodes, budget,
                                          (*row_init_on, *col_init_on, *random_keep))
        if sparse_dwconv not in SUBSET_MODES + ('core', ):
            raise ValueError(f"DiT: sparse_dwconv must be one of {SUBSET_MODES + ('core', )}, "
                             f'got {sparse_dwconv!r}')
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if not out_indices or any(not 0 <= i < NUM_SCALES for i in out_indices):
            raise ValueError(f'DiT: out_indices must be in 0..3, got {out_indices}')

        self._set_options(settings, num_stages, routing, out_nodes, out_indices, in_channels,
                          random_keep, tile_pretrained, sparse_dwconv)
        self.budget_loss = BudgetLoss(target=budget, loss_weight=check_loss_weight(
            budget_weight, 'budget_weight', 'DiT'))
        block_cfg = dict(linear=bool(settings.get('linear', False)), use_conv_ffn=True,
                         qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                         norm_cfg=norm_cfg, act_cfg=act_cfg)
        self._build_modules(block_cfg, drop_path_rate, norm_cfg,
                            dict(tau=tau, momentum=gate_momentum), static_size, row_init_on,
                            col_init_on)
        channels_last_convs_(self)   # the layout of the maps the convolutions read
        self._cost_cache: Dict[Tuple[int, int], dict] = {}
        self._param_counts = self._count_params()
        self.reset_dynamic_records()
        self.aux_losses: Dict[str, torch.Tensor] = {}
        self.last_valid_params: Optional[torch.Tensor] = None
        self.last_reached: Optional[torch.Tensor] = None  # Bool[B, 4, M + 1]: nodes reached
        self.set_decision_override(decision_override)

    def _set_options(self, settings: dict, num_stages: int, routing: str, out_nodes: str,
                     out_indices: Sequence[int], in_channels: int, random_keep: Sequence[float],
                     tile_pretrained: bool, sparse_dwconv: str) -> None:
        """The (checked) constructor options as attributes."""
        self.settings = settings
        self.embed_dims = list(settings['embed_dims'])
        self.depths = list(settings['depths'])
        self.num_stages = num_stages
        self.routing = routing
        self.row_mode, self.col_mode = ROUTINGS[routing]
        self.out_nodes = out_nodes
        self.out_indices = tuple(sorted(set(out_indices)))
        self.in_channels = in_channels
        self.random_keep = tuple(float(p) for p in random_keep)
        self.tile_pretrained = tile_pretrained
        self.sparse_dwconv = sparse_dwconv

    def _build_modules(self, block_cfg: dict, drop_path_rate: float, norm_cfg: dict,
                       gate_cfg: dict, static_size: int, row_init_on: float,
                       col_init_on: Sequence[float]) -> None:
        """The stem, every scale's blocks, gates and down paths (:meth:`_build_scale`), and the
        output norms, in this order (the modules draw their initial values from the random
        stream in it); drop-path rates rise linearly over the blocks of all scales."""
        self.stem = overlap_patch_embed(self.in_channels, self.embed_dims[0], 7, 4,
                                        norm_cfg=norm_cfg)
        dpr = drop_path_rates(drop_path_rate, sum(self.depths))
        self.stages = ModuleList()   # stages[i][j]: ModuleList of depths[i] PVT blocks
        self.downs = ModuleList()    # downs[i][j]: P[i][j], i < 3, j = 0..M
        self.row_gates = ModuleList()
        self.col_gates = ModuleList()
        for i in range(NUM_SCALES):
            first = sum(self.depths[:i])
            self._build_scale(i, block_cfg, dpr[first:first + self.depths[i]], norm_cfg,
                              gate_cfg, (math.ceil(static_size / (4 * 2 ** i)), ) * 2,
                              row_init_on, col_init_on)
        self.out_norms = ModuleList(
            [build_norm_layer(norm_cfg, self.embed_dims[i])[1] for i in range(NUM_SCALES)])

    @staticmethod
    def _parse_dit_arch(arch) -> Tuple[Optional[str], dict]:
        """``(arch name or None, settings)`` of a PVTv2 size name (b1..b5) or a dict."""
        if isinstance(arch, str):
            if arch.lower() not in ('b1', 'b2', 'b3', 'b4', 'b5'):
                raise ValueError(f'DiT: unknown size {arch!r}; choose b1, b2, b3, b4 or b5 '
                                 'or give a dict')
            settings = copy.deepcopy(PVTv2.arch_zoo[arch.lower()])
            name = arch.lower()
        elif isinstance(arch, dict):
            name, settings = None, PVTv2._parse_arch(arch)
        else:
            raise TypeError(f'DiT: arch must be a str or a dict, got {type(arch)}')
        if len(settings['embed_dims']) != NUM_SCALES:
            raise ValueError(f'DiT needs {NUM_SCALES} scales, got {len(settings["embed_dims"])}')
        return name, settings

    def _check_routing_args(self, num_stages, routing, out_nodes, budget,
                            probs: Sequence[float]) -> float:
        """Check the grid / routing arguments; the budget ``mu`` (the size's default for
        ``None``)."""
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ValueError(f'DiT: num_stages (M) must be an int >= 1, got {num_stages}')
        if routing not in ROUTINGS:
            raise ValueError(f'DiT: routing must be one of {sorted(ROUTINGS)}, got {routing!r}')
        if out_nodes not in ('pvt', 'last'):
            raise ValueError(f"DiT: out_nodes must be 'pvt' or 'last', got {out_nodes!r}")
        if budget is None:
            budget = DEFAULT_MU.get(self.arch_name, 1.0)
        if not 0.0 < budget <= 1.0:
            raise ValueError(f'DiT: budget mu must be in (0, 1], got {budget}')
        if routing in ('pvt', 'depth_only') and num_stages < NUM_SCALES:
            raise ValueError(f'DiT: routing {routing!r} needs num_stages >= {NUM_SCALES}')
        for p in probs:
            if not 0.0 < p < 1.0:
                raise ValueError(f'DiT: probabilities must be in (0, 1), got {p}')
        return budget

    def _build_scale(self, i: int, block_cfg: dict, dpr: Sequence[float], norm_cfg: dict,
                     gate_cfg: dict, shw: Tuple[int, int], row_init_on: Sequence[float],
                     col_init_on: Sequence[float]) -> None:
        """Append scale ``i``'s blocks ``B[i][j]``, row gates, and (``i < 3``) down paths
        ``P[i][j]`` and column gates (in this order: the modules draw their initial values from
        the random stream in it)."""
        M, c, settings = self.num_stages, self.embed_dims[i], self.settings
        self.stages.append(ModuleList([
            ModuleList([
                PVTBlock(c, settings['num_heads'][i], mlp_ratio=settings['mlp_ratios'][i],
                         sr_ratio=settings['sr_ratios'][i], drop_path=dpr[k], **block_cfg)
                for k in range(self.depths[i])]) for _ in range(M)]))
        if self.row_mode == 'static':
            self.row_gates.append(ModuleList(
                [StaticRowMask(shw, row_init_on[j != i]) for j in range(M)]))
        else:
            self.row_gates.append(ModuleList([
                GumbelSoftmaxGate(c, 2, init_probs=(1 - row_init_on[j != i], row_init_on[j != i]),
                                  **gate_cfg) for j in range(M)]))
        if i == NUM_SCALES - 1:
            return
        self.downs.append(ModuleList([
            DownPath(c, self.embed_dims[i + 1], 3, norm_cfg) for _ in range(M + 1)]))
        gates = ModuleList()
        for j in range(M + 1):
            on = col_init_on[0] if self._on_pvt_path(i, j) else col_init_on[1]
            if self.col_mode == 'static':
                gates.append(StaticColMask(on))
            else:
                gates.append(GumbelSoftmaxGate(c, 2, init_probs=(1 - on, on), **gate_cfg))
        self.col_gates.append(gates)

    def set_routing(self, routing: str) -> None:
        """Switch the routing rule at run time (not to or from ``'static'``, whose masks are
        separate modules)."""
        if routing not in ROUTINGS:
            raise ValueError(f'DiT: routing must be one of {sorted(ROUTINGS)}, got {routing!r}')
        if (routing == 'static') != (self.routing == 'static'):
            raise ValueError("DiT: cannot switch to or from 'static' routing after building")
        if routing in ('pvt', 'depth_only') and self.num_stages < NUM_SCALES:
            raise ValueError(f'DiT: routing {routing!r} needs num_stages >= {NUM_SCALES}')
        self.routing = routing
        self.row_mode, self.col_mode = ROUTINGS[routing]

    def _rules(self) -> Tuple[str, str]:
        """The (row, column) rules in force, the one place that ranks them: ``force_full``
        (every gate on), then the override's ``decisions`` (``'fixed'``), then its
        ``keep_ratio`` (``'forced'`` rows, ``columns`` columns), then the routing rule."""
        spec = self.decision_override or {}
        if self.force_full:
            return 'on', 'on'
        if 'decisions' in spec:
            return 'fixed', 'fixed'
        if 'keep_ratio' in spec:
            return 'forced', 'on' if spec['columns'] == 'all' else 'pvt'
        return self.row_mode, self.col_mode

    OVERRIDE_KEYS = ('keep_ratio', 'columns', 'decisions')
    REMOVED_ARGUMENTS = removed_override_arguments(forced_keep_ratio='keep_ratio',
                                                   forced_columns='columns')

    def _set_decision_override(self, spec: Optional[dict]) -> Optional[dict]:
        """The DiT keys of :attr:`decision_override` (see the class docstring)."""
        if spec is None:
            return None
        r = spec.get('keep_ratio')
        if r is not None and (isinstance(r, bool) or not 0.0 < float(r) <= 1.0):
            raise ValueError(f'DiT: decision_override keep_ratio must be in (0, 1], got {r}')
        cols = spec.setdefault('columns', 'pvt')
        if cols not in ('pvt', 'all'):
            raise ValueError(f"DiT: decision_override columns must be 'pvt' or 'all', got "
                             f'{cols!r}')
        if r is not None and cols == 'pvt' and self.num_stages < NUM_SCALES:
            raise ValueError(f"DiT: decision_override columns='pvt' needs num_stages >= "
                             f'{NUM_SCALES}')
        if r is not None:
            spec['keep_ratio'] = float(r)
        elif 'decisions' not in spec:
            raise ValueError('DiT: decision_override needs keep_ratio or decisions')
        else:
            spec.pop('keep_ratio', None)
        return spec

    def _imposed(self) -> bool:
        """Decisions come from outside the gates (``force_full`` or
        :attr:`decision_override`): no gate runs."""
        return self.force_full or self._rules()[0] in ('fixed', 'forced')

    def _row_gate_runs(self) -> bool:
        return self.row_mode == 'dynamic' and not self._imposed()

    def _col_gate_runs(self) -> bool:
        return self.col_mode == 'dynamic' and not self._imposed()

    def forced_row_mask(self, n: int, device=None) -> torch.Tensor:
        """``Bool[n]``: the tokens a stage of ``n`` tokens keeps under the override's
        ``keep_ratio``: :func:`~mmdyn.models.utils.evenly_spaced`, made on ``device``."""
        return evenly_spaced(n, self.decision_override['keep_ratio'], device)

    # ------------------------------------------------------------------ topology
    def out_column(self, i: int) -> int:
        """Column of the node scale ``i`` is read at."""
        if self.out_nodes == 'last' or i == NUM_SCALES - 1:
            return self.num_stages
        return min(i + 1, self.num_stages)

    def _on_pvt_path(self, i: int, j: int) -> bool:
        """Whether column path ``P[i][j]`` is on the PVTv2 staircase."""
        return j == i + 1

    @property
    def tau(self) -> float:
        """Gumbel-Softmax temperature of every gate (settable, e.g. by DynamicScheduleHook with
        ``'backbone.tau'``)."""
        return self.row_gates[0][0].tau

    @tau.setter
    def tau(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f'tau must be > 0, got {value}')
        for gates in list(self.row_gates) + list(self.col_gates):
            for g in gates:
                g.tau = float(value)

    @property
    def num_gates(self) -> int:
        return NUM_SCALES * self.num_stages + (NUM_SCALES - 1) * (self.num_stages + 1)

    # ------------------------------------------------------------------ init / loading
    def init_weights(self):
        pvt_style_init(m for name, m in self.named_modules() if 'gates' not in name)
        pre = find_pretrained_cfg(self.init_cfg)
        if pre is None and self.init_cfg is not None:
            super().init_weights()
        if pre is not None:
            load_converted(self, pre['checkpoint'], self._convert_checkpoint,
                           prefix=pre.get('prefix'))
        self._is_init = True

    def _convert_checkpoint(self, ckpt) -> dict:
        from ..utils.ckpt_convert import backbone_state_dict
        sd = backbone_state_dict(ckpt)
        if any(k.startswith('row_gates.') or k.startswith('downs.') for k in sd):
            return sd  # a DiT checkpoint
        return self.pvtv2_to_dit(pvt_to_mmdyn(ckpt), tile=self.tile_pretrained)

    def pvtv2_to_dit(self, sd: Dict[str, torch.Tensor], tile: bool = True) -> dict:
        """Map a PVTv2 state dict (mmdyn layout) onto this DiT.

        Stage ``i``'s blocks go to ``B[i][i]`` (all ``B[i][j]`` with ``tile``), its norm to the
        output norm of scale ``i`` and to the pre-norm of ``P[i][i+1]`` (all ``P[i][j]``), the
        patch embedding of stage ``i+1`` to ``P[i][i+1]`` (all ``P[i][j]``), stage 0's to the
        stem.
        """
        out = {}
        M = self.num_stages
        for k, v in sd.items():
            parts = k.split('.')
            if parts[0] != 'stages':
                continue
            i, rest = int(parts[1]), parts[2:]
            if rest[0] == 'patch_embed':
                tail = '.'.join(rest[1:])
                if i == 0:
                    out[f'stem.{tail}'] = v
                else:
                    cols = range(M + 1) if tile else [i]
                    for j in cols:
                        out[f'downs.{i - 1}.{j}.embed.{tail}'] = v
            elif rest[0] == 'blocks':
                tail = '.'.join(rest[1:])
                cols = range(M) if tile else [min(i, M - 1)]
                for j in cols:
                    out[f'stages.{i}.{j}.{tail}'] = v
            elif rest[0] == 'norm':
                tail = '.'.join(rest[1:])
                out[f'out_norms.{i}.{tail}'] = v
                if i < NUM_SCALES - 1:
                    cols = range(M + 1) if tile else [i + 1]
                    for j in cols:
                        out[f'downs.{i}.{j}.norm.{tail}'] = v
        return out

    def load_pvtv2(self, pvt: nn.Module, tile: bool = True) -> None:
        """Copy the weights of a :class:`PVTv2` of the same settings (see :meth:`pvtv2_to_dit`)."""
        missing, unexpected = self.load_state_dict(
            self.pvtv2_to_dit(pvt.state_dict(), tile=tile), strict=False)
        if unexpected:
            raise ValueError(f'unexpected keys {unexpected}')

    # ------------------------------------------------------------------ shapes / costs
    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """Row gates ``row_i_j``: one cell per token of scale ``i`` (stride ``4 * 2 ** i``);
        column gates ``col_i_j``: one per image. Both 0/1."""
        if key.startswith('row_'):
            return 4 * 2 ** int(key.split('_')[1]), True
        return None, True

    def scale_shapes(self, img_shape: Sequence[int]) -> List[Tuple[int, int]]:
        hw = self.stem.out_shape(tuple(img_shape))
        shapes = [tuple(hw)]
        for i in range(NUM_SCALES - 1):
            hw = self.downs[i][0].embed.out_shape(hw)
            shapes.append(tuple(hw))
        return shapes

    def _costs(self, img_shape: Sequence[int]) -> dict:
        """Full costs (MACs) of every edge for an ``img_shape`` input (cached)."""
        key = padded_input_shape(self, img_shape)  # what forward runs on small images
        if key in self._cost_cache:
            return self._cost_cache[key]
        shapes = self.scale_shapes(key)
        M = self.num_stages
        row = [[sum(int(b.flops(hw[0] * hw[1], hw)) for b in self.stages[i][j])
                for j in range(M)] for i, hw in enumerate(shapes)]
        col = [[self.downs[i][j].flops(shapes[i]) for j in range(M + 1)]
               for i in range(NUM_SCALES - 1)]
        # the same as polynomials in the kept token count (the realised MACs of a forward)
        row_poly = [[sum(CountPolynomial.fit(lambda n, b=b, hw=hw: b.flops(n, hw))
                         for b in self.stages[i][j]) for j in range(M)]
                    for i, hw in enumerate(shapes)]
        row_gate = [2 * shapes[i][0] * shapes[i][1] * self.embed_dims[i]
                    for i in range(NUM_SCALES)]
        col_gate = [2 * self.embed_dims[i] for i in range(NUM_SCALES)]
        # C_base: the PVTv2 of the same settings is the stem, one stage per scale and one
        # patch embedding between scales, i.e. column 0 of the grid (every column costs the same)
        c_stem = self.stem.flops(key)
        base = c_stem + sum(r[0] for r in row) + sum(c[0] for c in col)
        res = dict(shapes=shapes, stem=c_stem, row=row, row_poly=row_poly, col=col,
                   row_gate=row_gate, col_gate=col_gate, base=base)
        if len(self._cost_cache) >= COST_CACHE_ENTRIES:  # many input sizes: start over
            self._cost_cache.clear()
        self._cost_cache[key] = res
        return res

    def _gated(self) -> bool:
        return self.row_mode in ('dynamic', 'static') or self.col_mode in ('dynamic', 'static')

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the static fully connected network (every gate on, Table 6 "Fully"):
        stem, every stage and every column path that can reach an output; no gate runs in
        that mode."""
        return self.fully_flops(img_shape, with_gates=False)

    def fully_flops(self, img_shape: Sequence[int] = (224, 224), with_gates: bool = True) -> int:
        """MACs of the fully connected network: every stage and column path that can reach an
        output (all of them with every scale an output, the default), with their gates."""
        c = self._costs(img_shape)
        key = ('fully', bool(with_gates))  # every forward's records read it: once per size
        if key in c:
            return c[key]
        M, S = self.num_stages, NUM_SCALES
        need = self._needed(any_column=True)
        rows = [(i, j) for i in range(S) for j in range(M) if need[i][j] and need[i][j + 1]]
        cols = [(i, j) for i in range(S - 1) for j in range(M + 1)
                if need[i][j] and need[i + 1][j]]
        gates = sum(c['row_gate'][i] for i, _ in rows) + sum(c['col_gate'][i] for i, _ in cols)
        c[key] = int(c['stem'] + sum(c['row'][i][j] for i, j in rows)
                     + sum(c['col'][i][j] for i, j in cols) + (gates if with_gates else 0))
        return c[key]

    def base_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """``C_base``: MACs of the PVTv2 of the same size (``PVTv2.static_flops``)."""
        return int(self._costs(img_shape)['base'])

    def param_groups(self) -> dict:
        """Parameter counts of the routing space's parts (fixed by the constructor: counted
        once, at the end of ``__init__``)."""
        return self._param_counts

    def _count_params(self) -> dict:
        def n(m):
            return sum(p.numel() for p in m.parameters())
        res = dict(stem=n(self.stem),
                    stages=[[n(self.stages[i][j]) for j in range(self.num_stages)]
                            for i in range(NUM_SCALES)],
                    downs=[[n(d) for d in self.downs[i]] for i in range(NUM_SCALES - 1)],
                    row_gates=[[n(g) for g in self.row_gates[i]] for i in range(NUM_SCALES)],
                    col_gates=[[n(g) for g in self.col_gates[i]] for i in range(NUM_SCALES - 1)],
                    out_norms=[n(m) for m in self.out_norms],
                    total=n(self))
        return res

    # ------------------------------------------------------------------ decisions
    def _row_decision(self, i: int, j: int, x: torch.Tensor, hw) -> torch.Tensor:
        """``[B, N]`` 0/1 (straight-through in training) decisions of ``B[i][j]``."""
        mode = self._rules()[0]
        b, n = x.shape[:2]
        if mode == 'fixed':
            return self._fixed_decision(('row', i, j), (b, n), x)
        if mode == 'forced':
            return self.forced_row_mask(n, x.device).to(x.dtype)[None].expand(b, n)
        if mode == 'on':
            return x.new_ones(b, n)
        if mode == 'random':
            return (torch.rand(b, n, device=x.device) < self.random_keep[0]).to(x.dtype)
        if mode == 'attention':
            return self._attention_decision(i, j, x, hw)
        if mode == 'static':
            return self.row_gates[i][j](b, hw).to(x.dtype)
        return self.row_gates[i][j](x).decision[..., 1]

    @torch.no_grad()
    def _attention_decision(self, i: int, j: int, x: torch.Tensor, hw) -> torch.Tensor:
        """Table 7 "Attention": keep the ``random_keep[0]`` fraction of tokens that receive the
        most attention in the stage's first block (attention of every token over the reduced
        keys, averaged over heads, summed over queries, each key's mass given to the tokens of
        its reduction cell)."""
        blk = self.stages[i][j][0]
        b, n = x.shape[:2]
        _, logits = blk.attn(blk.norm1(x), hw, return_logits=True)
        recv = logits.softmax(-1).mean(1).sum(1)  # [B, Nk]
        kh, kw = blk.attn.kv_shape(hw)
        imp = F.interpolate(recv.view(b, 1, kh, kw), size=tuple(hw), mode='nearest').flatten(1)
        k = max(1, int(round(self.random_keep[0] * n)))
        idx = imp.topk(k, dim=1).indices
        return x.new_zeros(b, n).scatter_(1, idx, 1.0)

    def _row_gate_flops(self, i: int, j: int, hw, costs) -> int:
        """MACs of deciding the row of ``B[i][j]`` (0 when no gate runs)."""
        if self._imposed():
            return 0
        if self.row_mode == 'dynamic':
            return costs['row_gate'][i]
        if self.row_mode == 'attention':
            blk = self.stages[i][j][0]
            return int(blk.attn.flops(hw[0] * hw[1], hw))
        return 0

    def _fixed_decision(self, key, shape, x: torch.Tensor) -> torch.Tensor:
        """The imposed ``decision_override['decisions'][key]``, checked against ``shape``."""
        dec = self.decision_override['decisions'].get(key)
        if dec is None:
            raise UserValueError(
                f'DiT: decision_override decisions has no {key!r} (a {list(shape)} 0/1 '
                'tensor): every reached stage and column path needs its decisions')
        dec = torch.as_tensor(dec)
        if tuple(dec.shape) != tuple(shape):
            what = '[B, N] (N: the tokens of the scale)' if key[0] == 'row' else '[B]'
            raise UserValueError(
                f'DiT: decision_override decisions[{key!r}] must be {what} = {list(shape)} for '
                f'this input, got {list(dec.shape)}')
        return dec.to(x.device, x.dtype)

    def _col_decision(self, i: int, j: int, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` 0/1 decisions of ``P[i][j]``."""
        mode = self._rules()[1]
        b = x.shape[0]
        if mode == 'fixed':
            return self._fixed_decision(('col', i, j), (b, ), x)
        if mode == 'on':
            return x.new_ones(b)
        if mode == 'pvt':
            # a branch, not float(bool): under torch.compile the loop indices can be symbolic
            # after a graph break, and inductor cannot generate a float of a symbolic bool
            return x.new_ones(b) if self._on_pvt_path(i, j) else x.new_zeros(b)
        if mode == 'random':
            return (torch.rand(b, device=x.device) < self.random_keep[1]).to(x.dtype)
        if mode == 'static':
            return self.col_gates[i][j](b).to(x.dtype)
        return self.col_gates[i][j](x.mean(1)).decision[..., 1]

    def _needed(self, any_column: bool = False) -> List[List[bool]]:
        """Nodes whose value can reach an output: along the row or down any column path
        (static column rules: down the PVTv2 path's only; ``any_column``: any column path
        whatever the rule). With every scale an output (the default) every node can reach
        the last one; with fewer ``out_indices`` the nodes that cannot do not run and cost
        nothing."""
        M = self.num_stages
        need = [[False] * (M + 1) for _ in range(NUM_SCALES)]
        col_rule = self._rules()[1]
        # imposed decisions are pruned as the routing rule would be
        static_cols = not any_column and (
            col_rule == 'pvt' or (col_rule == 'fixed' and self.col_mode == 'pvt'))
        outs = {(i, self.out_column(i)) for i in self.out_indices}
        for j in range(M, -1, -1):
            for i in range(NUM_SCALES - 1, -1, -1):
                if (i, j) in outs:
                    need[i][j] = True
                    continue
                # gates decided from the data: any column path may be taken
                nxt = j < M and need[i][j + 1]
                down = i < NUM_SCALES - 1 and need[i + 1][j] and (
                    not static_cols or self._on_pvt_path(i, j))
                need[i][j] = nxt or down
        return need

    # ------------------------------------------------------------------ stage runs
    def _run_stage_dense(self, i, j, x, hw, g):
        """Training: every token computed, kept ones (``g``) written (straight-through)."""
        n = x.shape[1]
        pos = torch.arange(n, device=x.device).expand(x.shape[0], n)
        index = torch.where(g > 0, pos, torch.full_like(pos, -1))
        gm = g[..., None]
        for blk in self.stages[i][j]:
            y = blk.attn_residual(x, hw)
            z = blk.ffn_residual(y, hw, index)
            x = x + gm * (z - x)
        return x

    def _run_stage_sparse(self, i, j, x, hw, keep):
        """Eval: only the kept tokens run (gathered per image, keys from the whole map)."""
        sel = keep.any(1)
        if not bool(sel.any()):
            return x
        all_sel = bool(sel.all())
        xs = x if all_sel else x[sel]
        ks = keep if all_sel else keep[sel]
        if bool(ks.all()):
            # every token of these images computes: the plain dense stage (no gather/scatter)
            for blk in self.stages[i][j]:
                xs = blk(xs, hw)
        else:
            xs = self._run_blocks_on_subset(self.stages[i][j], xs, hw, ks)
        if all_sel:
            return xs
        out = x.clone()
        out[sel] = xs
        return out

    def _run_blocks_on_subset(self, blocks, x, hw, keep):
        """The blocks on the kept tokens of ``x`` (``[B, N, C]``, every image keeps one at
        least); the others keep their values. One working copy of the map per stage: the kept
        rows are read and written back in place, block after block."""
        b, n, c = x.shape
        ts = make_token_set(keep)
        if ts.padded:
            qidx = torch.where(ts.mask, ts.index, torch.full_like(ts.index, -1))
            real = ts.mask.reshape(-1)
        else:  # every image keeps as many: no padding slot, no mask
            qidx, real = ts.index, None
        rows = ts.index if b == 1 else ts.index + torch.arange(b, device=x.device)[:, None] * n
        rows = rows.reshape(-1)
        # without autograd one working copy is written in place; with it (saliency, attacks
        # on an eval model) every block writes a new map (the blocks keep their inputs)
        inplace = not torch.is_grad_enabled()
        xs = x.clone() if inplace else x
        flat = xs.view(b * n, c)
        plan = None
        for blk in blocks:
            q = flat.index_select(0, rows).view(b, -1, c)
            if self.sparse_dwconv != 'core' and isinstance(blk.ffn, MixFFN):
                if plan is None:
                    plan = blk.ffn.subset_plan(qidx, hw, mode=self.sparse_dwconv, dtype=x.dtype)
                y = blk.attn_residual(xs, hw, query=q)
                q = y + blk.drop_path(blk.ffn.forward_subset(blk.norm2(y), plan=plan))
            else:
                q = blk(xs, hw, query=q, query_index=qidx)
            q = q.reshape(-1, c)
            at, q = (rows, q) if real is None else (rows[real], q[real])
            if inplace:
                flat.index_copy_(0, at, q)
            else:
                flat = flat.index_copy(0, at, q)
                xs = flat.view(b, n, c)
        return xs

    def _run_down(self, i, j, x, hw, c):
        """``c * P(x)``; in eval only the images whose column gate is on run."""
        if self.training:
            return c[:, None, None] * self.downs[i][j](x, hw)
        sel = c > 0
        out_hw = self.downs[i][j].embed.out_shape(hw)
        out = x.new_zeros(x.shape[0], out_hw[0] * out_hw[1], self.embed_dims[i + 1])
        if bool(sel.all()):
            return self.downs[i][j](x, hw)
        if bool(sel.any()):
            out[sel] = self.downs[i][j](x[sel], hw)
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Images ``[B, C, H, W]`` -> a tuple of NCHW maps, one per ``out_indices`` scale."""
        x = pad_to_min_size(self, x)  # small / thin images: up to the size every scale takes
        img_shape = tuple(x.shape[-2:])
        costs = self._costs(img_shape)
        tokens, _ = self.stem(x)
        acc = _Accounts(self, tokens, costs)
        feats = self._run_grid(tokens, costs['shapes'], acc)
        outs = []
        for i in self.out_indices:
            f, hw = feats.get((i, self.out_column(i))), costs['shapes'][i]
            if f is None:  # nothing reached this output: zeros
                outs.append(tokens.new_zeros(x.shape[0], self.embed_dims[i], *hw)
                            + 0 * tokens.sum())
            else:
                o = self.out_norms[i](f)
                # in eval, zeros for an image of a batch that did not reach it, as alone (one
                # image that did not is never here: the node is absent)
                if not self.training and x.shape[0] > 1:
                    o = torch.where(acc.reached[:, i, self.out_column(i), None, None], o,
                                    o.new_zeros(()))
                outs.append(nlc_to_nchw(o, hw))
        ratio = acc.finish(img_shape)
        if self.training and self._gated() and not self._imposed():
            self.set_aux_losses({self.budget_loss.loss_name: self.budget_loss(ratio)})
        else:  # no budget loss this forward: none of an earlier one stays behind
            self.aux_losses = {}
        return tuple(outs)

    def _run_grid(self, tokens: torch.Tensor, shapes, acc: '_Accounts') -> dict:
        """Every node of the grid, column by column (Eq. 4): routing (is the node reached,
        which tokens / images take its paths), compute (the stage and the column path on
        them), accounting (``acc``). Returns the reached nodes' values ``{(i, j): [B, N, C]}``."""
        M, S = self.num_stages, NUM_SCALES
        need = self._needed()
        feats, row_out, col_out = {}, {}, {}   # row_out / col_out: (i, j) -> (value, alive)
        for j in range(M + 1):
            for i in range(S):
                hw = shapes[i]
                node = (tokens, tokens.new_ones(tokens.shape[0])) if i == j == 0 else \
                    _node_input(row_out.get((i, j - 1)), col_out.get((i - 1, j)))
                if node is None or not need[i][j] or not bool((node[1] > 0).any()):
                    acc.absent(i, j, hw)
                    continue
                f, a = node
                feats[(i, j)] = f
                acc.reach(i, j, a)
                if j < M and need[i][j + 1]:
                    g = self._row_decision(i, j, f, hw) * a[:, None]
                    run = self._run_stage_dense if self.training else self._run_stage_sparse
                    row_out[(i, j)] = (run(i, j, f, hw, g if self.training else g > 0), a)
                    acc.row(i, j, hw, g, a)
                elif j < M:
                    acc.absent_row(i, j, hw)
                if i < S - 1 and need[i + 1][j]:
                    c = self._col_decision(i, j, f) * a
                    if bool((c > 0).any()):
                        col_out[(i, j)] = (self._run_down(i, j, f, hw, c), c)
                    acc.col(i, j, c, a)
                elif i < S - 1:
                    acc.absent_col(i, j)
        return feats

    def _block_rows(self) -> List[dict]:
        """Rows of :meth:`block_table` (the core schema), per stage ``B[i][j]`` and column
        path ``P[i][j]``: ``tokens`` (tokens of scale ``i`` the stage computed, or that the
        path down-sampled, per image), ``kept_ratio`` (for ``B``: fraction of the stage's
        tokens computed, over all images; for ``P``: fraction of images taking the path),
        ``flops`` (MACs per image, gates included), then ``reached`` (fraction of images whose
        node ``F[i][j]`` was reached) and ``skip_reached`` (``B``: fraction of the tokens
        skipped among the images that reached the node, NaN if none did)."""
        if self.last_reached is None or not self.last_maps:
            raise RuntimeError('DiT.block_table: run a forward first')
        reached = self.last_reached.double().cpu()
        parts = getattr(self, '_last_part_flops', {})
        rows = []
        M = self.num_stages
        for kind in ('B', 'P'):
            for i in range(NUM_SCALES if kind == 'B' else NUM_SCALES - 1):
                for j in range(M if kind == 'B' else M + 1):
                    key = f'{"row" if kind == "B" else "col"}_{i}_{j}'
                    dec = self.last_maps[key].flatten(1).double().cpu().mean(1)
                    r = reached[:, i, j]
                    skip = float('nan')
                    if kind == 'B' and r.sum() > 0:
                        skip = float(1 - dec[r > 0].mean())
                    f = parts.get((kind, i, j))
                    n = self.last_maps[f'row_{i}_0'][0].numel()
                    rows.append(dict(block=f'{kind}[{i}][{j}]', tokens=float(dec.mean()) * n,
                                     kept_ratio=float(dec.mean()),
                                     flops=0. if f is None else float(f.double().mean()),
                                     reached=float(r.mean()), skip_reached=skip))
        return rows

