"""DGE: the Dynamic Grained Encoder (Song et al., NeurIPS 2021) on PVT v1, DPVT and DeiT hosts.

How one encoder layer runs
--------------------------
A :class:`DynamicGrainedEncoder` wraps the host's own transformer block (the "vanilla encoder")
of one layer. For a ``[B, E + H*W, C]`` input (``E`` extra tokens such as a cls token, then the
``H x W`` patch tokens):

1. **Regions.** The patch map is split into ``S x S`` regions, ``S = max(Phi)`` (or
   ``region_size``), padded at the bottom/right when ``H`` or ``W`` is not a multiple of ``S``
   (border regions average over their real tokens only). ``layer_wise=True`` makes the whole
   map one region (layer-wise routing, Table 1 of the paper).
2. **Gate.** Each region is average-pooled from the block *input* and projected by a linear
   ``C -> K`` (``K = len(Phi)``). Training: hard Gumbel-Softmax, ``tau = 1``, straight-through;
   eval: ``argmax`` of the logits, no noise.
3. **Sparse queries.** A region at granularity ``phi`` gives ``ceil(rows / phi) *
   ceil(cols / phi)`` queries, each the average of a ``phi x phi`` patch (``phi = 0``: no query,
   the region is passed through unchanged). Extra tokens are always their own queries (the
   vanilla path).
4. **Vanilla encoder.** The host block updates the queries; its keys and values come from the
   full map through the host's own path (PVT: the spatial-reduction convolution; DeiT: all
   tokens). Nothing else of the host changes, so host checkpoints load as they are.
5. **Un-pool + residual.** ``out = x + unpool(q_out - q)``: every token of a patch receives its
   query's update.

Training and eval paths
-----------------------
* ``train_path='dense'`` (default, what the authors did): in training every granularity's
  queries are computed for every region (``(1 + 1/4 + 1/16) N`` queries for ``{1, 2, 4}``);
  every granularity's update is un-pooled, multiplied by its straight-through one-hot gate
  value and the products are summed (the authors' estimator: the forward is the chosen update,
  and every candidate's soft score ``k`` gets the task gradient ``<dL/dout, unpool(update_k)>``).
  Training then costs more than the static host; only inference is cheaper.
* ``train_path='sparse'``: training gathers only the chosen queries (token sets), as in eval,
  and multiplies their updates by the straight-through gate value (1 in the forward): the
  selected-only estimator (only the chosen score gets a task gradient).
* **eval** (always sparse): per image, only the chosen queries are gathered into a padded token
  set and run through the block; padding queries are discarded, so every image computes exactly
  what it computes alone (a single image skips the padding: one index of its kept candidates).
  Un-pooling is one gather: every token takes the update of the query that covers it. One image
  on the CPU whose map is in whole patches of every granularity reads the chosen queries by
  region and un-pools by broadcasting instead: each coarse granularity's updates on its own
  grid, added to the tokens coarsest first, and a fine token takes its query's output
  (:meth:`DynamicGrainedEncoder._update_on_grids`).

Because queries do not interact (keys/values are the full map, the FFN is token-wise), all three
paths give the same output for the same gate decisions; the tests check it (the gate gradients
of the two training paths differ, as described).

Budget
------
``budget_convention='authors'`` (default): ``beta`` is vtpack's trained ratio, the whole
model's dynamic cost over its static cost counted as vtpack counts (static parts, gates, patch
embeddings and ``budget_head_flops`` on both sides; :meth:`_DGEHostMixin._authors_layer_cost`).
``budget_convention='paper'``:
``beta`` (Eq. 7) = ``sum_l C_l psi_l / sum_l C_l (E_l + H_l W_l)`` per image, where ``C_l`` is the
cost of one query in layer ``l`` (``block.flops(1) - block.flops(0)``) and ``psi_l`` the number of
queries the gate chose (``E_l`` + the sum over regions of the one-hot decision times each
granularity's query count; straight-through in training). The extra tokens are counted on both
sides (the paper leaves them out, the official code counts them). In training the backbone sets
``aux_losses = {'loss_budget': lambda * (mean_b beta - gamma) ** 2}`` (the auxiliary-losses
protocol: ``mmdyn.DynamicStatsHook`` adds it to the model's loss dict) and ``expected_cost = beta``.

Complexity records (the dynamic-module interface): ``last_flops`` per image are the patch
embeddings, the gates (``regions * C * K``) and every block at the number of queries it ran
(eval) or that the gate chose (training; the dense training path computes more).
``static_flops`` is the host's. ``force_full`` runs the host blocks directly, every token a
query, no gate: exactly the static host.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import ModuleList

from mmdyn.registry import MODELS
from mmdyn.utils.arguments import check_arguments
from ..layers.attention import nlc_to_nchw
from ..layers.deformable_attention import DeformablePointAttention, token_reference_points
from ..layers.gates import GumbelSoftmaxGate, categorical_eval, straight_through
from ..layers.region_pool import region_extents, region_grid, region_ids, region_pool_tokens
from ..layers.shape_constants import constant, device_key
from ..layers.token_sets import gather_rows, gather_tokens, make_token_set
from ..layers.transformer_blocks import TransformerBlock
from ..losses.budget_loss import BudgetLoss
from ..utils.ckpt_convert import (backbone_state_dict, dge_granularities, find_pretrained_cfg,
                                  load_converted, pvt_to_mmdyn, vit_to_mmdyn)
from ..utils.checks import check_loss_weight
from ..utils.dynamic import (BlockRecord, DynamicModuleMixin,
                             removed_override_arguments)
from ..utils.min_size import pad_to_min_size
from .pvt import PVT
from .vit import ViT

__all__ = ['DynamicGrainedEncoder', 'DGEPVT', 'DGEViT', 'DGEDPVT', 'DPVT', 'DPVTBlock',
           'FractionChoice', 'check_dge_args']

TRAIN_PATHS = ('dense', 'sparse')
BUDGET_CONVENTIONS = ('authors', 'paper')
#: cached layer cost entries at most (layers x map sizes x gate states; see ``_layer_costs``)
LAYER_COST_ENTRIES = 1024


def check_dge_args(granularities, region_size=None, layer_wise=False, budget=0.5,
                   train_path='dense', init_prob=0.95) -> Tuple[Tuple[int, ...], Optional[int]]:
    """Validate DGE arguments; returns the granularities in gate order and the region size.

    Gate order: non-zero granularities ascending (finest first), then ``0`` (skip) if present.

    Raises:
        ValueError: empty or duplicated ``Phi``, a negative or non-int granularity, ``Phi`` with
            only ``0``, a granularity that does not divide the region size ``S``, ``budget``
            (gamma) outside ``[0, 1]``, an unknown ``train_path``, ``init_prob`` outside (0, 1).
    """
    if granularities is None or len(granularities) == 0:
        raise ValueError('DGE: the candidate granularity set Phi must not be empty')
    phis = []
    for p in granularities:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise ValueError(f'DGE: granularities must be ints >= 0, got {list(granularities)}')
        phis.append(int(p))
    if len(set(phis)) != len(phis):
        raise ValueError(f'DGE: granularities must be distinct, got {phis}')
    if len(phis) < 2:
        raise ValueError(f'DGE: Phi needs at least two candidates for the gate, got {phis}')
    nonzero = sorted(p for p in phis if p > 0)
    if not nonzero:
        raise ValueError(f'DGE: Phi needs a granularity > 0, got {phis}')
    order = tuple(nonzero + ([0] if 0 in phis else []))
    if layer_wise:
        if region_size is not None:
            raise ValueError('DGE: give either layer_wise=True or a region_size, not both')
        size = None
    else:
        size = max(nonzero) if region_size is None else region_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f'DGE: region_size must be an int >= 1, got {region_size!r}')
        bad = [p for p in nonzero if size % p]
        if bad:
            raise ValueError(f'DGE: granularities {bad} do not divide the region size S={size} '
                             f'(Phi={phis})')
    if not (isinstance(budget, (int, float)) and 0.0 <= float(budget) <= 1.0):
        raise ValueError(f'DGE: the budget gamma must be in [0, 1], got {budget!r}')
    if train_path not in TRAIN_PATHS:
        raise ValueError(f'DGE: train_path must be one of {TRAIN_PATHS}, got {train_path!r}')
    if not 0.0 < float(init_prob) < 1.0:
        raise ValueError(f'DGE: init_prob must be in (0, 1), got {init_prob}')
    return order, size


class FractionChoice:
    """A forced gate: each region draws granularity ``k`` with probability ``fractions[k]``
    (seeded by the region grid, so the same map size gets the same pattern). For benchmarks of
    a gate forced to a budget, e.g. ``(0.45, 0.1, 0.45)`` for ``Phi = {1, 2, 4}`` keeps about
    ``0.45 + 0.1 / 4 + 0.45 / 16 = 0.5`` of the queries."""

    def __init__(self, fractions: Sequence[float], seed: int = 0):
        f = [float(v) for v in fractions]
        if any(v < 0 for v in f) or abs(sum(f) - 1.0) > 1e-6:
            raise ValueError(f'forced fractions must be >= 0 and sum to 1, got {list(fractions)}')
        self.fractions = f
        self.seed = seed
        self._drawn = {}  # (b, gh, gw, device) -> the pattern (the same draw every time)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != len(self.fractions):
            raise ValueError(f'{len(self.fractions)} fractions for {logits.shape[-1]} choices')
        b, gh, gw = logits.shape[:3]
        key = (b, gh, gw, device_key(logits.device))
        idx = self._drawn.get(key)
        if idx is None:  # drawn once per shape (a benchmark's forward should not pay for it)
            g = torch.Generator().manual_seed(self.seed + 1000 * gh + gw)
            idx = torch.multinomial(torch.tensor(self.fractions), b * gh * gw,
                                    replacement=True, generator=g)
            if len(self._drawn) >= 64:
                self._drawn.clear()
            idx = self._drawn[key] = idx.reshape(b, gh, gw).to(logits.device)
        return idx


class DynamicGrainedEncoder(nn.Module):
    """The router of one DGE layer; the host block it drives is passed to :meth:`forward`.

    Args:
        embed_dims (int): Token width ``C``.
        granularities (Sequence[int]): Candidate patch sides ``Phi`` (``0`` = no query).
        region_size (int, optional): Region side ``S``; default ``max(Phi)``.
        layer_wise (bool): One region covering the whole map (layer-wise routing).
        tau (float): Gumbel-Softmax temperature. Default 1.
        init_prob (float): Initial probability of the finest granularity (the rest share the
            remainder); the official code starts at 0.95.
        train_path (str): ``'dense'`` or ``'sparse'`` (see the module docstring).

    Attributes:
        forced_choice: ``None`` (the gate decides), an ``int`` index into :attr:`granularities`
            for every region, or a callable ``logits[B, gh, gw, K] -> LongTensor[B, gh, gw]``.
            Set by the host's decision override (:meth:`_DGEHostMixin._set_decision_override`).
    """

    def __init__(self, embed_dims: int, granularities: Sequence[int] = (1, 2, 4),
                 region_size: Optional[int] = None, layer_wise: bool = False, tau: float = 1.0,
                 init_prob: float = 0.95, train_path: str = 'dense'):
        super().__init__()
        self.granularities, self.region_size = check_dge_args(
            granularities, region_size, layer_wise, 0.5, train_path, init_prob)
        self.layer_wise = bool(layer_wise)
        self.train_path = train_path
        self.embed_dims = embed_dims
        k = len(self.granularities)
        probs = [init_prob] + [(1.0 - init_prob) / (k - 1)] * (k - 1)
        self.gate = GumbelSoftmaxGate(embed_dims, k, tau=tau, init_probs=probs)
        self.forced_choice: Union[None, int, Callable] = None

    @property
    def num_choices(self) -> int:
        return len(self.granularities)

    # ------------------------------------------------------------------ geometry
    @property
    def _side(self) -> Optional[int]:
        """Region side for :mod:`~mmdyn.models.layers.region_pool` (None: one region)."""
        return None if self.layer_wise else self.region_size

    def region_grid(self, hw: Sequence[int]) -> Tuple[int, int]:
        return region_grid(hw, self._side)

    def _geometry_key(self, name, hw, device, *extra):
        return ('dge', name, self.granularities, self._side, (int(hw[0]), int(hw[1])),
                device_key(device)) + extra

    def query_counts(self, hw, device=None) -> torch.Tensor:
        """``[gh, gw, K]`` float64 number of queries each region gives at each granularity
        (cached per shape and device: do not modify in place)."""

        def make():
            rows, cols = region_extents(hw, self._side, device)
            out = []
            for p in self.granularities:
                if p == 0:
                    out.append(torch.zeros(rows.numel(), cols.numel(), device=device))
                else:
                    out.append(((-(-rows // p))[:, None] * (-(-cols // p))[None, :]).float())
            return torch.stack(out, -1).to(torch.float64)

        return constant(self._geometry_key('counts', hw, device), make)

    def region_areas(self, hw, device=None) -> torch.Tensor:
        """``[gh, gw]`` float64 tokens in every region, divided by the map's tokens (cached)."""

        def make():
            rows, cols = region_extents(hw, self._side, device)
            area = (rows[:, None] * cols[None, :]).to(torch.float64)
            return area / area.sum()

        return constant(self._geometry_key('areas', hw, device), make)

    def _patch_regions(self, hw, p, device) -> torch.Tensor:
        """Region index (row-major) of every ``p x p`` patch of the map, ``Long[n_p]`` (``p``
        divides ``S``: regions of ``S / p`` patches on the patch grid)."""
        patch_grid = (-(-hw[0] // p), -(-hw[1] // p))
        return region_ids(patch_grid, None if self.layer_wise else self.region_size // p,
                          device)

    # ------------------------------------------------------------------ gate
    def _pooled_maps(self, t: torch.Tensor, hw) -> Dict[int, torch.Tensor]:
        """Token-layout pools ``[B, ceil(H/p), ceil(W/p), C]`` of the ``[B, H*W, C]`` tokens for
        every size needed (the granularities and ``S``), each computed from the largest smaller
        one when the map divides evenly."""
        h, w = hw
        sizes = sorted({p for p in self.granularities if p > 1} |
                       ({self.region_size} if self.region_size and self.region_size > 1
                        else set()))
        out = {1: t.reshape(t.shape[0], h, w, t.shape[-1])}
        for p in sizes:
            src = max(q for q in out if p % q == 0)
            if src > 1 and h % p == 0 and w % p == 0:
                out[p] = region_pool_tokens(out[src], hw, p, p // src)
            else:
                out[p] = region_pool_tokens(t, hw, p)
        return out

    def route(self, t: torch.Tensor, hw, pooled_maps: Optional[Dict[int, torch.Tensor]] = None):
        """Decisions of every region of the ``[B, H*W, C]`` tokens of an ``H x W`` map:
        ``(decision[B, gh, gw, K], choice[B, gh, gw] long, soft[B, gh, gw, K])``.

        ``decision`` is one-hot (straight-through in training); ``soft`` the gate's relaxed
        sample (training) or ``softmax(logits)`` (eval)."""
        b, c = t.shape[0], t.shape[-1]
        if self.layer_wise:
            pooled = t.mean(1).view(b, 1, 1, c)
        elif pooled_maps is not None and self.region_size in pooled_maps:
            pooled = pooled_maps[self.region_size]
        else:
            pooled = region_pool_tokens(t, hw, self.region_size)
        if not self.training:  # the gate's eval rule (one-hot argmax) unless forced
            logits = self.gate.logits(pooled)  # [B, gh, gw, K]
            idx = logits.argmax(-1) if self.forced_choice is None else \
                self._forced_index(logits)
            out = categorical_eval(logits, index=idx)
            return out.decision, idx, out.soft
        out = self.gate(pooled)
        if self.forced_choice is not None:
            idx = self._forced_index(out.logits)
            hard = torch.zeros_like(out.decision).scatter_(-1, idx.unsqueeze(-1), 1.0)
            return straight_through(out.soft, hard), idx, out.soft
        # the argmax of the noisy one-hot sample
        return out.decision, out.decision.detach().argmax(-1), out.soft

    def _forced_index(self, logits: torch.Tensor) -> torch.Tensor:
        """The regions' choices ``Long[B, gh, gw]`` under :attr:`forced_choice`, checked."""
        fc = self.forced_choice
        shape = logits.shape[:-1]
        if callable(fc):
            idx = fc(logits.detach()).long()
        else:
            if not 0 <= int(fc) < self.num_choices:
                raise ValueError(f'forced choice must be indices in [0, {self.num_choices})'
                                 f', got {fc}')
            idx = torch.full(shape, int(fc), dtype=torch.long, device=logits.device)
        # a user's callable is checked on the device values (two host syncs); a fixed index is
        # checked above, drawn fractions are valid by construction
        trusted = isinstance(fc, FractionChoice) or not callable(fc)
        if idx.shape != shape or (not trusted and (
                int(idx.min()) < 0 or int(idx.max()) >= self.num_choices)):
            raise ValueError(f'forced choice must be indices in [0, {self.num_choices}) '
                             f'of shape {tuple(shape)}')
        return idx

    def gate_flops(self, hw) -> int:
        gh, gw = self.region_grid(hw)
        return gh * gw * self.gate.proj.in_features * self.num_choices

    # ------------------------------------------------------------------ forward
    def _owner_table(self, hw, offsets, device) -> torch.Tensor:
        """``Long[K, H*W]``: for every granularity (gate order) and token, the position in the
        concatenated query list of the query covering that token (``-1`` for ``phi = 0``)."""

        def make():
            rows = []
            for p, off in zip(self.granularities, offsets):
                if p == 0:
                    rows.append(torch.full((hw[0] * hw[1], ), -1, dtype=torch.long,
                                           device=device))
                else:  # the p x p patch of every token: un-pooling
                    rows.append(off + region_ids(hw, p, device))
            return torch.stack(rows)

        return constant(self._geometry_key('owner', hw, device, tuple(offsets)), make)

    def _candidate_refs(self, hw, device) -> torch.Tensor:
        """``[Q, 2]`` ``(x, y)`` centres (token units) of every candidate query (no extras;
        cached per shape and device: do not modify in place)."""
        h, w = hw

        def make():
            refs = []
            for p in self.granularities:
                if p == 0:
                    continue
                if p == 1:
                    refs.append(token_reference_points(hw, device))
                    continue

                def centres(size):
                    start = torch.arange(-(-size // p), device=device, dtype=torch.float32) * p
                    return start + ((size - start).clamp(max=p) - 1) / 2
                cy, cx = centres(h), centres(w)
                refs.append(torch.stack([cx[None, :].expand(len(cy), -1).reshape(-1),
                                         cy[:, None].expand(-1, len(cx)).reshape(-1)], -1))
            return torch.cat(refs, 0)

        return constant(self._geometry_key('refs', hw, device), make)

    def _unpool_chosen(self, delta, owner, x_sp):
        """``x_sp`` plus, for every token, the update of the chosen query covering it (``owner``
        ``[B, H*W]`` rows of ``delta``, ``-1``: none): one row gather over the flattened batch
        (much faster than an element gather), a zero row for "no query"."""
        b, c = delta.shape[0], delta.shape[-1]
        if 0 in self.granularities:
            nd = delta.shape[1]
            delta = torch.cat([delta, delta.new_zeros(b, 1, c)], 1)
            owner = torch.where(owner < 0, torch.full_like(owner, nd), owner)
        rows = delta.shape[1]
        if b > 1:
            owner = owner + torch.arange(b, device=delta.device)[:, None] * rows
        upd = delta.reshape(b * rows, c).index_select(0, owner.reshape(-1)).view(b, -1, c)
        return upd.add_(x_sp) if upd.dtype == x_sp.dtype else x_sp + upd

    def forward(self, block: nn.Module, x: torch.Tensor, hw: Sequence[int],
                num_extra: int = 0) -> Tuple[torch.Tensor, Dict]:
        """Run ``block`` as a dynamic grained encoder.

        Args:
            block: The host's transformer block: ``block(x, hw, query=q) -> q_out``.
            x (Tensor): ``[B, E + H*W, C]`` tokens, extra tokens first.
            hw (tuple): ``(H, W)``.
            num_extra (int): ``E``.

        Returns:
            tuple: output tokens ``[B, E + H*W, C]`` and a dict with ``decision`` (one-hot
            ``[B, gh, gw, K]``, straight-through in training), ``choice`` (``Long[B, gh, gw]``),
            ``num_queries`` (``[B]`` float64, queries the gate chose, extras included),
            ``ran_queries`` (``[B]``, queries the block computed, padding excluded).
        """
        hw = (int(hw[0]), int(hw[1]))
        b, n, c = x.shape
        if n != num_extra + hw[0] * hw[1]:
            raise ValueError(f'DGE: {n} tokens are not {num_extra} extra + {hw[0]}x{hw[1]}')
        x_ex, x_sp = (x[:, :num_extra], x[:, num_extra:]) if num_extra else (None, x)
        pooled_maps = self._pooled_maps(x_sp, hw)
        decision, choice, soft = self.route(x_sp, hw, pooled_maps)
        gh, gw = decision.shape[1:3]
        dec_flat = decision.reshape(b, gh * gw, -1)
        hard_flat = choice.reshape(b, gh * gw)

        needs_ref = getattr(block, 'needs_query_ref', False)
        if needs_ref and num_extra:
            raise ValueError('extra tokens with deformable attention are not supported')
        # one image at eval on the CPU, the map in whole patches: the chosen queries are read
        # from the tokens and the pools by region, their updates broadcast back
        single = b == 1 and not self.training
        if single and x.device.type == 'cpu' and self._whole_patches(hw):
            out, counts = self._update_on_grids(block, x, hw, num_extra, hard_flat[0],
                                                pooled_maps, needs_ref)
            delta = None  # the extras are in ``out``
            # queries chosen (= run: no padding); the share of the map at the finest
            # granularity (when it is 1: its queries are its tokens)
            num_chosen = ran = torch.full((1, ), counts[0], dtype=torch.float64,
                                          device=x.device)
            if self.granularities[0] == 1:
                fine = torch.full((1, ), counts[1] / (hw[0] * hw[1]), dtype=torch.float64,
                                  device=x.device)
        else:
            queries, keep_all, weights, offsets = self._candidates(x, hw, num_extra,
                                                                   pooled_maps, dec_flat,
                                                                   hard_flat)
            # every candidate in one list; one image at eval gathers its kept ones (no
            # padding), else a padded token set of the kept ones. At eval on the CPU the kept
            # queries are read from the parts (no copy of the whole map into the candidate
            # list); elsewhere from the one list (the parts' slots would be more reads from
            # the device; training weighs every candidate)
            q_all = queries if not self.training and x.device.type == 'cpu' else \
                torch.cat(queries, 1)
            ref_all = self._candidate_refs(hw, x.device) if needs_ref else None
            if self.training and self.train_path == 'dense':
                delta, out, ran = self._dense_update(block, x, hw, num_extra, q_all, weights,
                                                     offsets, ref_all)
            else:
                # the query covering each token under the chosen granularity (-1: none)
                tok_choice = hard_flat.index_select(1, region_ids(hw, self._side, x.device))
                owner = self._owner_table(hw, offsets, x.device).gather(0, tok_choice)
                delta, out, ran = self._selected_update(block, x, hw, num_extra, keep_all,
                                                        q_all, weights, ref_all, owner, single)
        if num_extra and delta is not None:
            out = torch.cat([x_ex + delta[:, :num_extra], out], 1)
        if delta is not None:
            num_chosen = keep_all.sum(1).to(torch.float64)
        if delta is not None or self.granularities[0] != 1:
            fine = ((choice == 0).to(torch.float64) *
                    self.region_areas(hw, x.device)).sum((1, 2))
        info = dict(decision=decision, choice=choice, num_queries=num_chosen, ran_queries=ran,
                    grid=(gh, gw), soft=soft, fine_area=fine)
        return out, info

    def _candidate_index(self, hw, num_extra, device):
        """Per candidate query after the extras (every non-zero granularity's patches, gate
        order): its region ``Long[Q]``, its granularity ``Long[Q]`` (index into
        :attr:`granularities`) and ``region * K + granularity`` (into the flattened
        decisions); and every granularity's start offset in the candidate list (cached)."""
        def make():
            rids, labels, offsets, pos = [], [], [], num_extra
            for k, p in enumerate(self.granularities):
                offsets.append(pos)
                if p == 0:
                    continue
                rid = self._patch_regions(hw, p, device)
                rids.append(rid)
                labels.append(torch.full_like(rid, k))
                pos += rid.numel()
            rid, lab = torch.cat(rids), torch.cat(labels)
            return rid, lab, rid * self.num_choices + lab, tuple(offsets)

        return constant(self._geometry_key('candidates', hw, device, num_extra), make)

    def _candidates(self, x, hw, num_extra, pooled_maps, dec_flat, hard_flat):
        """All candidate queries: the extra tokens, then every non-zero granularity's pooled
        patches (one source each); ``keep_all`` ``Bool[B, E + Q]`` (chosen: the extras and the
        patches of the granularity their region chose), the gate ``weights`` ``[B, E + Q]``
        (training only, else None) and every granularity's start offset."""
        b, c = x.shape[0], x.shape[2]
        queries = [x[:, :num_extra]]
        for p in self.granularities:
            if p:
                queries.append(x[:, num_extra:] if p == 1 else pooled_maps[p].reshape(b, -1, c))
        rid, lab, flat, offsets = self._candidate_index(hw, num_extra, x.device)
        keep_all = hard_flat.index_select(1, rid) == lab
        weights = None
        if self.training:
            weights = dec_flat.reshape(b, -1).index_select(1, flat)
        if num_extra:
            keep_all = torch.cat([keep_all.new_ones(b, num_extra), keep_all], 1)
            if weights is not None:
                weights = torch.cat([weights.new_ones(b, num_extra), weights], 1)
        return queries, keep_all, weights, list(offsets)

    def _dense_update(self, block, x, hw, num_extra, q_all, weights, offsets, ref_all):
        """The authors' dense training path: every candidate runs; ``(delta, new spatial
        tokens, queries run)``."""
        b = x.shape[0]
        kw = dict(query_ref=ref_all) if ref_all is not None else {}
        y = block(x, hw, query=q_all, **kw)
        delta = (y - q_all) * weights[..., None]  # ST: the gate's gradient
        ran = torch.full((b, ), float(q_all.shape[1]), dtype=torch.float64, device=x.device)
        # the authors' estimator: every granularity's un-pooled update times its
        # straight-through gate value, summed (0 times the others in the forward, so the
        # output is the chosen update exactly); every candidate's soft score gets the task
        # gradient <dL/dout, unpool(update_k)>
        table = self._owner_table(hw, offsets, x.device)
        upd = None
        for k, p in enumerate(self.granularities):
            if p == 0:
                continue
            term = delta.index_select(1, table[k])
            upd = term if upd is None else upd + term
        return delta, x[:, num_extra:] + upd, ran

    def _selected_update(self, block, x, hw, num_extra, keep_all, q_all, weights, ref_all,
                         owner, single=False):
        """Only the chosen queries run (one image at eval: no padding; else a padded token
        set); ``(delta, new spatial tokens, queries run)``."""
        b = x.shape[0]
        kw = {}
        if single:  # one image at eval: its kept candidates (one read from the device)
            kept = keep_all[0].nonzero().squeeze(1)
            qs = gather_candidates(q_all, kept)
            lengths = keep_all.new_full((1, ), kept.numel(), dtype=torch.float64)
            if ref_all is not None:  # no extra tokens with reference points
                kw['query_ref'] = ref_all.index_select(0, kept)
        else:
            ts = make_token_set(keep_all)
            # padding slots: non-kept candidates (their updates are never read)
            qs = gather_tokens(q_all, ts) if isinstance(q_all, torch.Tensor) else \
                gather_candidates(q_all, ts.index)
            lengths = ts.lengths
            if ref_all is not None:
                kw['query_ref'] = gather_tokens(ref_all[None].expand(b, -1, -1), ts)
        delta = block(x, hw, query=qs, **kw) - qs
        if self.training:  # 1 in the forward; the gate's gradient
            delta = delta * gather_tokens(weights[..., None], ts)
        # position of every candidate query among the kept ones
        slot = keep_all.long().cumsum(1) - 1
        owner = torch.where(owner < 0, owner, slot.gather(1, owner.clamp_min(0)))
        return delta, self._unpool_chosen(delta, owner, x[:, num_extra:]), lengths.to(
            torch.float64)

    def _whole_patches(self, hw) -> bool:
        """Whether every non-zero granularity tiles the ``H x W`` map in whole patches and each
        one's patches tile the next coarser one's (e.g. ``{1, 2, 4}`` on a map of sides
        divisible by 4): then un-pooling is a broadcast (:meth:`_update_on_grids`)."""
        ps = sorted(p for p in self.granularities if p > 1)
        return all(hw[0] % p == 0 and hw[1] % p == 0 for p in ps) and \
            all(q % p == 0 for p, q in zip(ps, ps[1:]))

    def _update_on_grids(self, block, x, hw, num_extra, choice, pooled_maps, needs_ref):
        """One image at eval on the CPU, the map in whole patches (:meth:`_whole_patches`):
        ``(new tokens [1, E + H*W, C], (queries run, fine queries run))``. ``choice``:
        ``Long[gh * gw]``, the regions' granularity indices; ``pooled_maps``: every
        granularity's pool (:meth:`_pooled_maps`).

        The chosen queries (the extras, then each chosen granularity's patches in the regions
        that chose it, row-major) are read from the tokens and the pools into one list; after
        the block, a fine token (``phi = 1``) takes its query's output as it is, and every
        coarser granularity's updates ``q_out - q`` are placed on that granularity's grid
        (zero where a region chose another one) and added to the tokens by broadcasting,
        coarsest first: no candidate list, no per-token table of owners, no gather over the
        whole map."""
        h, w = hw
        c = x.shape[-1]
        x2 = x.reshape(-1, c)  # [E + H*W, C]
        x_sp = x2[num_extra:]  # the map's tokens
        counts = torch.bincount(choice, minlength=self.num_choices).tolist()  # one host read
        chosen = []  # (phi, its part [n_phi, C], the positions read from it, its index k)
        for k, p in enumerate(self.granularities):
            if not p or not counts[k]:
                continue
            hit = choice == k
            if p == self._side:  # a patch is a region
                pos = hit.nonzero().squeeze(1)
            else:  # the patches of the regions that chose it
                pos = hit.index_select(0, self._patch_regions(hw, p, x.device)).nonzero()
                pos = pos.squeeze(1)
            part = x_sp if p == 1 else pooled_maps[p].reshape(-1, c)
            chosen.append((p, part, pos, k))
        qs = read_parts([x2[:num_extra]] + [t[1] for t in chosen],
                        [None] + [t[2] for t in chosen])
        starts = [num_extra]
        for t in chosen:
            starts.append(starts[-1] + t[2].numel())
        # no autograd (inference): the output written in place, no concatenation
        direct = not torch.is_grad_enabled()
        kw = {}
        if needs_ref:  # no extra tokens with reference points; positions among the candidates
            offsets = self._candidate_index(hw, 0, x.device)[3]
            kept = torch.cat([choice.new_zeros(0)] + [t[2] + offsets[t[3]] for t in chosen])
            kw['query_ref'] = self._candidate_refs(hw, x.device).index_select(0, kept)
        y = block(x, hw, query=qs[None], **kw)[0]
        grid, fine = None, None  # the coarse updates so far, on the grid of ``grid_p``
        for (p, _, idx, _), a, e in sorted(zip(chosen, starts, starts[1:]),
                                           key=lambda t: -t[0][0]):
            if p == 1:
                fine = (idx, y[a:e])
                continue
            upd = x.new_zeros(h // p, w // p, c)
            upd.view(-1, c).index_copy_(0, idx, y[a:e] - qs[a:e])
            if grid is not None:  # the coarser updates, broadcast over this grid
                r = grid_p // p
                upd = (upd.view(h // grid_p, r, w // grid_p, r, c) +
                       grid.view(h // grid_p, 1, w // grid_p, 1, c)).view(h // p, w // p, c)
            grid, grid_p = upd, p
        if grid is None:  # no coarse granularity: the fine tokens are written below
            tokens = x_sp
        else:
            g, tokens = (h // grid_p, w // grid_p), x_sp.reshape(h // grid_p, grid_p,
                                                                 w // grid_p, grid_p, c)
            grid = grid.view(g[0], 1, g[1], 1, c)
        if direct:  # the extras (always kept, first) and the map in one new tensor
            out = x.new_empty(1, num_extra + h * w, c)
            out2 = out.view(-1, c)
            if num_extra:
                out2[:num_extra] = y[:num_extra]
            out_sp = out2[num_extra:]
            if grid is None:
                out_sp.copy_(tokens)
            else:
                torch.add(tokens, grid, out=out_sp.view(tokens.shape))
        else:
            out_sp = x_sp.clone() if grid is None else (tokens + grid).view(h * w, c)
        if fine is not None and fine[0].numel():
            out_sp.index_copy_(0, *fine)
        if not direct:
            out = (torch.cat([y[:num_extra], out_sp]) if num_extra else out_sp)[None]
        return out, (starts[-1], 0 if fine is None else fine[0].numel())


def gather_candidates(candidates, kept: torch.Tensor) -> torch.Tensor:
    """The candidate queries at positions ``kept`` of their concatenation along dim 1:
    ``Long[L]`` sorted positions of one image (``[1, L, C]`` out), or ``Long[B, L]`` per image
    (a token set's index, any order; ``[B, L, C]`` out). ``candidates`` is that concatenation
    (``[B, Q, C]``) or its parts (a list of ``[B, n_k, C]``): each part is then read at its own
    positions (a few reads of positions on the host), not copied whole into one list first."""
    if isinstance(candidates, torch.Tensor):
        if kept.dim() == 1:
            return candidates.index_select(1, kept)
        return gather_rows(candidates, kept)
    sizes = [int(q.shape[1]) for q in candidates]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    c = candidates[0].shape[-1]
    if kept.dim() == 2:  # per image: the slots of each part, read by rows
        b, l = kept.shape
        flat = kept.reshape(-1)
        image = torch.arange(b, device=kept.device).repeat_interleave(l)
        part_of = torch.bucketize(flat, kept.new_tensor(starts[1:]), right=True)
        out = candidates[0].new_empty(b * l, c)
        for k, (part, n, start) in enumerate(zip(candidates, sizes, starts)):
            slots = (part_of == k).nonzero().squeeze(1) if n else None
            if slots is None or not slots.numel():
                continue
            rows = image.index_select(0, slots) * n + (flat.index_select(0, slots) - start)
            out.index_copy_(0, slots, part.reshape(b * n, c).index_select(0, rows))
        return out.view(b, l, c)
    return read_parts([q[0] for q in candidates], split_positions(kept, sizes))[None]


def read_parts(parts, positions) -> torch.Tensor:
    """Rows ``positions[k]`` (``Long``, or ``None``: every row) of every part ``parts[k]``
    (``[n_k, C]``), one after the other: ``[L, C]``. Without autograd they are written into one
    new tensor (no concatenation)."""
    sizes = [int(part.shape[0]) if pos is None else int(pos.numel())
             for part, pos in zip(parts, positions)]
    if not torch.is_grad_enabled():
        out = parts[0].new_empty(sum(sizes), parts[0].shape[-1])
        start = 0
        for part, pos, n in zip(parts, positions, sizes):
            if n:
                if pos is None:
                    out[start:start + n] = part
                else:
                    torch.index_select(part, 0, pos, out=out[start:start + n])
                start += n
        return out
    pieces = [part if pos is None else part.index_select(0, pos)
              for part, pos, n in zip(parts, positions, sizes) if n]
    if not pieces:
        return parts[0].new_zeros(0, parts[0].shape[-1])
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def split_positions(kept: torch.Tensor, sizes: Sequence[int]) -> List[torch.Tensor]:
    """Sorted positions ``kept`` (``Long[L]``) in a concatenation of parts of ``sizes`` along
    one dim, as each part's own positions (a list of ``Long``, one per part; one read of the
    cut points on the host)."""
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    cuts = torch.searchsorted(kept, kept.new_tensor(starts[1:])).tolist() if len(sizes) > 1 \
        else []
    return [pos - start if start else pos
            for pos, start in zip(torch.tensor_split(kept, cuts), starts)]


def _block_flops(block, nq, hw, num_extra):
    """MACs of a host block updating ``nq`` queries with keys from the full map."""
    if block.attn.has_reduction:
        if num_extra:
            raise ValueError('extra tokens with a spatially reduced attention are not supported')
        return block.flops(nq, hw)
    return block.flops(nq, hw, num_keys=hw[0] * hw[1] + num_extra)


class _DGEHostMixin(DynamicModuleMixin):
    """Shared bookkeeping of the DGE hosts (records, budget loss, forced choices)."""

    def _init_dge(self, dge, granularities, region_size, layer_wise, budget, budget_weight, tau,
                  init_prob, train_path, dims_per_layer, budget_convention='authors',
                  budget_head_flops=0):
        if budget_convention not in BUDGET_CONVENTIONS:
            raise ValueError(f'DGE: budget_convention must be one of {BUDGET_CONVENTIONS}, got '
                             f'{budget_convention!r}')
        if not budget_head_flops >= 0:
            raise ValueError(f'DGE: budget_head_flops must be >= 0, got {budget_head_flops}')
        self.budget_convention = budget_convention
        self.budget_head_flops = float(budget_head_flops)
        self.dge_enabled = bool(dge)
        if not self.dge_enabled:
            self.OVERRIDE_KEYS = ()  # the static host: no decision to override
        self.granularities, self.region_size = check_dge_args(
            granularities, region_size, layer_wise, budget, train_path, init_prob)
        self.layer_wise = bool(layer_wise)
        self.train_path = train_path
        self.budget_loss = BudgetLoss(target=float(budget), loss_weight=check_loss_weight(
            budget_weight, 'budget_weight', 'DGE'))
        self.reset_dynamic_records()
        self.aux_losses = {}
        self._layer_cost_cache = {}  # see _layer_costs
        if not self.dge_enabled:
            return None
        return [[DynamicGrainedEncoder(c, granularities, region_size, layer_wise, tau, init_prob,
                                       train_path) for c in stage]
                for stage in dims_per_layer]

    @property
    def budget(self) -> float:
        return self.budget_loss.target

    def _freeze_gates(self, layers) -> None:
        """The gates of frozen layers are frozen with them: eval mode (the deterministic eval
        rule, no Gumbel noise) and no gradient."""
        for enc in layers:
            enc.eval()
            for p in enc.parameters():
                p.requires_grad = False

    def dge_layers(self) -> List[DynamicGrainedEncoder]:
        if not self.dge_enabled:
            return []
        return [m for m in self.modules() if isinstance(m, DynamicGrainedEncoder)]

    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """The patch side each region of layer ``key`` chose (``stage{i}.block{j}`` of a PVT
        host, ``block{j}`` of a ViT): one cell per region of ``region_size`` tokens (the
        layer's token stride times it), one per image with ``layer_wise``."""
        if self.layer_wise:
            return None, False
        if key.startswith('stage'):
            stride = self.stage_strides[int(key[len('stage'):].split('.')[0])]
        else:
            stride = self.patch_size
        return stride * self.region_size, False

    OVERRIDE_KEYS = ('fractions', 'choice')
    REMOVED_ARGUMENTS = removed_override_arguments(forced_fractions='fractions')

    def _set_decision_override(self, spec: Optional[dict]) -> Optional[dict]:
        """The DGE keys of :attr:`decision_override`: ``fractions`` (one probability per
        granularity, gate order: every region draws one, :class:`FractionChoice`) or
        ``choice`` (an index into :attr:`granularities`, ``('phi', value)`` or a callable
        ``logits[B, gh, gw, K] -> LongTensor[B, gh, gw]``); it becomes
        :attr:`DynamicGrainedEncoder.forced_choice` of every layer."""
        choice = None
        if spec is not None:
            if len(spec) != 1:
                raise ValueError('DGE: decision_override takes fractions or choice, not both')
            if 'fractions' in spec:
                if len(spec['fractions']) != len(self.granularities):
                    raise ValueError(f'DGE: decision_override fractions needs '
                                     f'{len(self.granularities)} entries (one per granularity '
                                     f'in {self.granularities})')
                choice = FractionChoice(spec['fractions'])
            else:
                choice = spec['choice']
            if isinstance(choice, tuple) and len(choice) == 2 and choice[0] == 'phi':
                if choice[1] not in self.granularities:
                    raise ValueError(f'granularity {choice[1]} not in {self.granularities}')
                choice = self.granularities.index(choice[1])
        for m in self.dge_layers():
            m.forced_choice = choice
        return spec

    def _load_pretrained(self, pre: dict, convert) -> None:
        """Load an ``init_cfg`` checkpoint. A static host's checkpoint (no gate at all) leaves
        the gates at their initialisation; a checkpoint that carries DGE gates (vtpack's, ours)
        must convert whole: a missing or unexpected key is an error (a gate of another number
        of choices too), and vtpack's granularities (its ``dge.splits``) must be the model's."""
        seen = {}

        def convert_and_note(ckpt):
            seen['phi'] = dge_granularities(backbone_state_dict(ckpt))
            sd = convert(ckpt)
            seen['gates'] = any(k.startswith('dge.') and '.gate.' in k for k in sd)
            return sd

        missing, unexpected = load_converted(self, pre['checkpoint'], convert_and_note,
                                             adapt=self._adapt_state_dict,
                                             prefix=pre.get('prefix'))
        name, path = type(self).__name__, pre['checkpoint']
        phi = seen.get('phi')
        own = (tuple(p for p in self.granularities if p), self.region_size)
        if phi is not None and (tuple(phi[0]), max(phi[0])) != own:
            raise ValueError(f'{name}: the DGE checkpoint {path} has granularities {phi[0]} '
                             f'(region side {max(phi[0])}), the model {own[0]} (region side '
                             f'{own[1]}): its gates would choose other patch sizes')
        gates = {k for k in self.state_dict() if k.startswith('dge.') and '.gate.' in k}
        carries = seen.get('gates') or (gates and not gates <= set(missing))
        if carries and (missing or unexpected):
            raise ValueError(f'{name}: the DGE checkpoint {path} does not convert whole (gates '
                             f'of another number of choices?): missing keys {missing}, '
                             f'unexpected keys {unexpected}')

    def _init_host_and_gates(self, convert) -> None:
        """The host's random initialisation (its ``random_init``), the gates', then the
        ``init_cfg`` checkpoint (if any) converted with ``convert``. Only a ``Pretrained``
        ``init_cfg`` is applied."""
        self.random_init()
        self._reinit_gates()
        pre = find_pretrained_cfg(self.init_cfg)
        if pre is not None:
            self._load_pretrained(pre, convert)
        self._is_init = True

    def _reinit_gates(self):
        for m in self.dge_layers():
            m.gate.init_weights()

    def _run_layer(self, idx, enc, block, x, hw, num_extra, acc):
        """Run one layer; note its costs in ``acc`` (summed by :meth:`_finish`: per-image
        arithmetic once per forward, not per layer)."""
        full_q = hw[0] * hw[1] + num_extra
        f0, cq, a0, a1 = self._layer_costs(idx, enc, block, hw, num_extra)
        acc['den'] += cq * full_q
        acc['a_den'] += a0 + a1 * full_q
        acc['tokens'] += full_q
        if enc is None or self.force_full:
            acc['layers'].append((idx, full_q, f0, cq, a0, a1, None, None))
            return block(x, hw)
        y, info = enc(block, x, hw, num_extra)
        if self.training:  # differentiable in the (straight-through) decisions
            counts = enc.query_counts(hw, x.device)  # [gh, gw, K]
            psi = num_extra + (info['decision'].to(torch.float64) * counts).sum((1, 2, 3))
            ran = info['num_queries']
        else:  # the same number: the chosen queries, extras included
            psi, ran = info['num_queries'], info['ran_queries']
        acc['layers'].append((idx, full_q, f0 + enc.gate_flops(hw), cq, a0, a1, psi, ran))
        acc['fine'].append(info['fine_area'])
        # the map of patch sides is read in :meth:`_finish` (an index op per layer there, back
        # to back, costs a fraction of one here, after the block's matrix products)
        acc['maps'][idx] = (enc.granularities, info['choice'])
        return y

    def _layer_costs(self, idx, enc, block, hw, num_extra):
        """``(f0, cq, a0, a1)`` of one layer: our MACs of the block with no query and per
        query (:func:`_block_flops`), vtpack's cost with no query and per query
        (:meth:`_authors_layer_cost`, the router's included when the gate runs); both counts
        are affine in the query count. Python numbers, cached per layer, map size, extra
        tokens and whether the gate runs (they were a tenth of a small image's forward)."""
        gated = enc is not None and not self.force_full
        # the rest of what the counts read (blocks, granularities, region size) is fixed at
        # construction
        key = (idx, int(hw[0]), int(hw[1]), int(num_extra), gated)
        cache = self.__dict__.setdefault('_layer_cost_cache', {})  # (a model pickled before)
        costs = cache.get(key)
        if costs is None:
            f0 = _block_flops(block, 0, hw, num_extra)
            cq = _block_flops(block, 1, hw, num_extra) - f0
            e = enc if gated else None
            a0 = float(self._authors_layer_cost(e, block, hw, num_extra, 0.0))
            a1 = float(self._authors_layer_cost(e, block, hw, num_extra, 1.0)) - a0
            if len(cache) >= LAYER_COST_ENTRIES:  # many input sizes (multi-scale): start over
                cache.clear()
            costs = cache[key] = (f0, cq, a0, a1)
        return costs

    def _new_acc(self, x):
        """The per-forward accumulator: Python numbers for what every image shares (``flops``,
        ``num``, ``a_num``, ``queries`` start at 0; the layers' per-image terms are added by
        :meth:`_finish`), ``layers``: ``(name, full queries, MACs with no query (gate
        included), MACs per query, vtpack's a0, a1, chosen queries [B] or None (every
        token), queries run [B] or None)`` per layer; ``maps``: ``(granularities, choice
        indices)`` per gated layer, read as patch sides by :meth:`_finish`."""
        return dict(zero=torch.zeros(x.shape[0], dtype=torch.float64, device=x.device),
                    flops=0.0, num=0.0, den=0.0, queries=0.0, tokens=0, fine=[], maps={},
                    a_num=0.0, a_den=0.0, layers=[])

    def _sum_layers(self, acc):
        """Add every layer's per-image terms to ``acc`` (``flops``, ``queries``, ``num`` /
        ``a_num``, now ``[B]`` tensors) and return the :class:`BlockRecord` of every layer.
        The gated layers' terms are computed at once, from their stacked query counts."""
        layers = acc['layers']
        for name, full_q, f0, cq, a0, a1, psi_l, _ in layers:
            if psi_l is None:  # every token ran, no gate: numbers
                acc['flops'] += f0 + cq * full_q
                acc['queries'] += float(full_q)
                acc['num'] += float(cq * full_q)
                acc['a_num'] += a0 + a1 * full_q
        gated = [t for t in layers if t[6] is not None]
        rows = iter(())
        if gated:
            psi = torch.stack([t[6] for t in gated])  # [L, B]
            ran = torch.stack([t[7] for t in gated])
            col = lambda k: psi.new_tensor([t[k] for t in gated])[:, None]  # noqa: E731
            per_layer = col(2) + col(3) * ran  # [L, B] MACs of each layer
            acc['flops'] = acc['flops'] + per_layer.sum(0)
            acc['queries'] = acc['queries'] + psi.sum(0)
            if self.budget_convention == 'authors':
                acc['a_num'] = acc['a_num'] + (col(4) + col(5) * psi).sum(0)
            else:  # only the convention in use is accumulated
                acc['num'] = acc['num'] + (col(3) * psi).sum(0)
            rows = iter(zip(per_layer.unbind(0), ran.unbind(0)))
        for k in ('flops', 'queries', 'num', 'a_num'):
            acc[k] = acc['zero'] + acc[k]
        blocks = []
        for name, full_q, f0, cq, _, _, psi_l, _ in layers:
            if psi_l is None:
                blocks.append(BlockRecord(name, float(full_q), full_q, float(f0 + cq * full_q)))
            else:
                flops_l, ran_l = next(rows)
                blocks.append(BlockRecord(name, ran_l, full_q, flops_l))
        return blocks

    # ------------------------------------------------------------------ budget conventions
    _authors_attention = 'pvt'  # vtpack's PVT counts q @ k once; its DeiT counts it twice

    def _authors_layer_cost(self, enc, block, hw, num_extra, nq):
        """vtpack's cost of one layer (``Block.complexity(num_inputs, num_queries)`` plus the
        router's ``DynamicRouter.complexity``) for ``nq`` queries (float or ``[B]`` tensor).

        ``Ni = H W + E`` inputs; norms ``2 Ni C``; q and output projections ``2 nq C^2``; keys
        and values ``2 Nk C^2`` from ``Nk = Ni / sr^2`` (float, as vtpack) with the reduction
        ``Ni C^2 + Nk C`` (sr > 1); attention ``nq Nk C`` (PVT) or ``2 nq Ni C`` (DeiT);
        softmax ``3 nq Nk heads``; MLP ``nq (2 C hidden + hidden)``; router ``Ni / S^2 C (1 +
        K)`` (pooling and linear gate). Blocks the authors released no DGE code for (DPVT):
        our count of the block (:func:`_block_flops`, its static parts included) plus the
        router."""
        ni = float(hw[0] * hw[1] + num_extra)
        attn, ffn = block.attn, getattr(block, 'ffn', None)
        std = hasattr(attn, 'sr_ratio') and not getattr(attn, 'linear', False) and \
            hasattr(ffn, 'fc1') and not hasattr(ffn, 'dwconv')
        if std:
            c, heads, hid = block.embed_dims, attn.num_heads, ffn.fc1.out_features
            sr = attn.sr_ratio
            cost = 2 * ni * c + 2 * nq * c * c + nq * (2 * c * hid + hid)
            if self._authors_attention == 'deit':
                cost = cost + 2 * ni * c * c + 2 * nq * ni * c + 3 * nq * ni * heads
            else:
                nk = ni / sr ** 2
                if sr > 1:
                    cost = cost + ni * c * c + nk * c
                cost = cost + 2 * nk * c * c + nq * nk * c + 3 * nq * nk * heads
        else:
            cost = _block_flops(block, nq, hw, num_extra)
        if enc is not None and not self.force_full:
            regions = ni / enc.region_size ** 2 if enc.region_size else 1.0
            cost = cost + regions * enc.embed_dims * (1 + enc.num_choices)
        return cost

    def _authors_static_cost(self, img_shape) -> float:
        """vtpack's ``model.complexity`` terms outside the DGE layers: the patch embedding(s) and
        the classifier (``budget_head_flops``). As vtpack, the pixel count of the input is taken
        as ``x.shape[1] * x.shape[2]`` (channels times height, not height times width: a defect
        of the authors' code kept because the trained budgets depend on it, see the README)."""
        raise NotImplementedError

    def _finish(self, acc, img_shape):
        blocks = self._sum_layers(acc)
        if self.budget_convention == 'authors':
            const = self._authors_static_cost(img_shape) + self.budget_head_flops
            beta = (acc['a_num'] + const) / max(acc['a_den'] + const, 1.0)
        else:
            beta = acc['num'] / acc['den']
        static = float(self.static_flops(img_shape))
        stats = dict(kept_ratio=acc['queries'] / acc['tokens'],
                     flops_ratio=acc['flops'] / static, budget_ratio=beta.detach())
        if acc['fine']:
            stats['fine_ratio'] = torch.stack(acc['fine']).mean(0)
        use_gates = self.dge_enabled and not self.force_full
        maps = {}
        for name, (phis, choice) in acc['maps'].items():  # choice indices -> patch sides
            maps[name] = constant(
                ('dge', 'phis', phis, device_key(choice.device)),
                lambda p=phis, d=choice.device: torch.tensor(p, device=d))[choice]
        self.record_dynamic(acc['flops'], stats, expected_cost=beta if use_gates else None,
                            maps=maps, blocks=blocks)
        if self.training and use_gates:
            self.set_aux_losses(
                {self.budget_loss.loss_name: self.budget_loss(beta.float().mean())})
        else:
            self.aux_losses = {}


@MODELS.register_module()
@check_arguments
class DGEPVT(_DGEHostMixin, PVT):
    """PVT v1 with a dynamic grained encoder in every block (``dge=False``: the static PVT).

    Args:
        arch, and every other argument of :class:`mmdyn.models.backbones.PVT`.
        dge (bool): DGE on. Default True.
        granularities (Sequence[int]): ``Phi``. Default ``(1, 2, 4)``.
        region_size (int, optional): ``S``; default ``max(Phi)``.
        layer_wise (bool): Layer-wise routing (one region per map). Default False.
        budget (float): ``gamma`` in [0, 1]. Default 0.5.
        budget_weight (float): ``lambda``. Default 1.
        tau (float): Gumbel-Softmax temperature. Default 1.
        init_prob (float): Initial probability of the finest granularity. Default 0.95.
        train_path (str): ``'dense'`` (default: every granularity computed, the authors'
            straight-through estimator over all candidates) or ``'sparse'`` (the chosen
            queries only, the selected-only estimator).
        budget_convention (str): What ``budget`` (gamma) is a ratio of. ``'authors'``
            (default, vtpack's trained ratio): the whole model's dynamic cost over its static
            cost, static parts (keys/values, spatial reduction, norms, gates, patch embeddings,
            ``budget_head_flops``) included on both sides, vtpack's FLOP counting.
            ``'paper'``: Eq. 7, ``sum_l C_l psi_l / sum_l C_l N_l`` (queries only).
        budget_head_flops (float): The classifier's MACs, counted on both sides of the
            ``'authors'`` ratio as vtpack does (``C * num_classes``). Default 0.
        dge_stages (Sequence[int]): Stages with DGE. Default all.
        decision_override (dict, optional): Force the gates (benchmarks; also
            :func:`mmdyn.models.utils.override_decisions` for a ``with`` block):
            ``fractions`` (every region draws granularity ``k``, gate order, finest first,
            with probability ``fractions[k]``, :class:`FractionChoice`) or ``choice`` (see
            :meth:`_set_decision_override`). Default None (the gates decide).

    The gates are parameters ``dge.{stage}.{block}.gate.proj.*``; every other key is the static
    PVT's, so PVT checkpoints (official whai362 v1, mmdet, mmdyn) load through ``init_cfg``.
    With ``dge=False`` it has exactly the static PVT's parameters and outputs.
    """

    def __init__(self, arch='small', dge: bool = True, granularities=(1, 2, 4),
                 region_size=None, layer_wise: bool = False, budget: float = 0.5,
                 budget_weight: float = 1.0, tau: float = 1.0, init_prob: float = 0.95,
                 train_path: str = 'dense', dge_stages: Optional[Sequence[int]] = None,
                 decision_override: Optional[dict] = None,
                 budget_convention: str = 'authors', budget_head_flops: float = 0,
                 **kwargs):
        super().__init__(arch=arch, **kwargs)
        dge_stages = list(range(self.num_stages)) if dge_stages is None else list(dge_stages)
        if any(not 0 <= s < self.num_stages for s in dge_stages):
            raise ValueError(f'dge_stages {dge_stages} out of range')
        self.dge_stages = dge_stages
        dims = [[self.embed_dims[i]] * self.depths[i] for i in range(self.num_stages)]
        layers = self._init_dge(dge, granularities, region_size, layer_wise, budget,
                                budget_weight, tau, init_prob, train_path, dims,
                                budget_convention, budget_head_flops)
        if layers is not None:
            self.dge = ModuleList([
                ModuleList(layers[i] if i in dge_stages else []) for i in range(self.num_stages)
            ])
            self._freeze_stages()  # the gates of frozen stages too
        self.set_decision_override(decision_override)

    def init_weights(self):
        self._init_host_and_gates(pvt_to_mmdyn)

    def _freeze_stages(self):
        super()._freeze_stages()
        if getattr(self, 'dge', None) is not None:
            self._freeze_gates(m for i in range(min(self.frozen_stages + 1, self.num_stages))
                               for m in self.dge[i])

    def static_flops(self, img_shape: Sequence[int] = (224, 224)) -> int:
        """MACs of the static PVT host (every token a query, no gate)."""
        return PVT.static_flops(self, img_shape)

    def _authors_static_cost(self, img_shape) -> float:
        n = float(self.in_channels * img_shape[0])  # vtpack: x.shape[1] * x.shape[2]
        cost = 0.0
        for st, p in zip(self.stages, self.patch_sizes):
            proj = st.patch_embed.projection
            cost += n * proj.in_channels * proj.out_channels + n / (p * p) * proj.out_channels
            n /= p * p
        return cost

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """NCHW maps of the stages in ``out_indices`` (a tuple, as :class:`PVT`)."""
        x = pad_to_min_size(self, x)  # small / thin images: up to the size every stage takes
        img_shape = tuple(x.shape[-2:])
        acc = self._new_acc(x)
        outs = []
        for i, st in enumerate(self.stages):
            acc['flops'] = acc['flops'] + st.patch_embed.flops(tuple(x.shape[-2:]))
            tokens, hw = st.embed(x)
            extra = 0
            if self.with_cls_token and i == self.num_stages - 1:
                tokens, extra = self.embed_cls(tokens), 1  # a query of every DGE layer
            for j, blk in enumerate(st.blocks):
                enc = None
                if self.dge_enabled and i in self.dge_stages:
                    enc = self.dge[i][j]
                tokens = self._run_layer(f'stage{i}.block{j}', enc, blk, tokens, hw, extra,
                                         acc)
            tokens = st.norm(tokens)
            if extra:
                if i in self.out_indices:
                    outs.append(tokens[:, 0])
                continue
            x = nlc_to_nchw(tokens, hw)
            if i in self.out_indices:
                outs.append(x)
        self._finish(acc, img_shape)
        return tuple(outs)


@MODELS.register_module()
@check_arguments
class DGEViT(_DGEHostMixin, ViT):
    """ViT / DeiT with a dynamic grained encoder in every block (``dge=False``: the static ViT).

    Args:
        arch (str | dict): ``'deit-t' | 'deit-s' | 'deit-b'`` (and every ViT arch). Default
            ``'deit-s'``.
        img_size (int): Default 256 (the paper's input; 16 x 16 tokens, divisible by S = 4).
        dge, granularities, region_size, layer_wise, budget, budget_weight, tau, init_prob,
        train_path, decision_override, budget_convention, budget_head_flops: as
        :class:`DGEPVT`.
        Every other argument: :class:`mmdyn.models.backbones.ViT`.

    The cls token is always its own query (the vanilla path). The gates are parameters
    ``dge.{block}.gate.proj.*``; timm/DeiT, mmseg, mmpretrain and mmdyn ViT checkpoints load.
    """

    def __init__(self, arch='deit-s', img_size=256, dge: bool = True, granularities=(1, 2, 4),
                 region_size=None, layer_wise: bool = False, budget: float = 0.5,
                 budget_weight: float = 1.0, tau: float = 1.0, init_prob: float = 0.95,
                 train_path: str = 'dense', decision_override: Optional[dict] = None,
                 budget_convention: str = 'authors', budget_head_flops: float = 0, **kwargs):
        super().__init__(arch=arch, img_size=img_size, **kwargs)
        layers = self._init_dge(dge, granularities, region_size, layer_wise, budget,
                                budget_weight, tau, init_prob, train_path,
                                [[self.embed_dims] * self.depth], budget_convention,
                                budget_head_flops)
        if layers is not None:
            self.dge = ModuleList(layers[0])
            self._freeze()  # the gates of frozen blocks too
        self.set_decision_override(decision_override)

    def init_weights(self):
        self._init_host_and_gates(vit_to_mmdyn)

    def _freeze(self):
        super()._freeze()
        if getattr(self, 'dge', None) is not None and self.frozen_stages > 0:
            self._freeze_gates(self.dge[:self.frozen_stages])

    _authors_attention = 'deit'

    def static_flops(self, img_shape: Sequence[int] = (256, 256)) -> int:
        """MACs of the static ViT host (every token a query, no gate)."""
        return ViT.static_flops(self, img_shape)

    def _authors_static_cost(self, img_shape) -> float:
        # vtpack's DeiT: N * D * 3 with N = x.shape[1] * x.shape[2]
        return float(self.in_channels * img_shape[0]) * self.embed_dims * self.in_channels

    def forward(self, x: torch.Tensor) -> tuple:
        img_shape = tuple(x.shape[-2:])
        x, hw = self.embed(x)
        acc = self._new_acc(x)
        acc['flops'] = acc['flops'] + self.patch_embed.flops(img_shape)
        outs = []
        for i, blk in enumerate(self.blocks):
            enc = self.dge[i] if self.dge_enabled else None
            x = self._run_layer(f'block{i}', enc, blk, x, hw, self.num_extra_tokens, acc)
            if i == self.depth - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self.format_output(x, hw))
        self._finish(acc, img_shape)
        return tuple(outs)


class DPVTBlock(TransformerBlock):
    """DPVT block: ``x + attn(norm1(x))`` with :class:`DeformablePointAttention`, then the MLP.

    ``forward(x, hw, query=None, query_ref=None)``: queries at reference points ``query_ref``
    (token units; default the token positions) with values from the full map ``x``.
    ``attn_drop`` drops sampling-point weights in training; the spatial-reduction arguments of
    :class:`TransformerBlock` do not apply.
    """
    needs_query_ref = True

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4.,
                 num_points: int = 4, offset_grad_scale: float = 0.1, **kwargs):
        self.num_points = num_points  # a plain int, read by build_attention during __init__
        self.offset_grad_scale = offset_grad_scale
        super().__init__(embed_dims, num_heads, mlp_ratio=mlp_ratio, **kwargs)

    def build_attention(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                        attn_drop: float = 0., proj_drop: float = 0., **unused) -> nn.Module:
        return DeformablePointAttention(embed_dims, num_heads, self.num_points,
                                        qkv_bias=qkv_bias, attn_drop=attn_drop,
                                        proj_drop=proj_drop,
                                        offset_grad_scale=self.offset_grad_scale)

    def forward(self, x, hw_shape=None, query=None, query_ref=None, **kwargs):
        xn = self.norm1(x)
        qn = None if query is None else self.norm1(query)
        base = x if query is None else query
        y = base + self.drop_path(self.attn(xn, hw_shape, query=qn, query_ref=query_ref))
        return self.ffn_residual(y, hw_shape)


@MODELS.register_module()
@check_arguments
class DGEDPVT(DGEPVT):
    """DPVT (PVT v1 with deformable point attention, 4 points, no spatial reduction) with DGE.

    Args: as :class:`DGEPVT` (``sr_ratios`` of the arch are unused; ``attn_drop_rate`` drops
    sampling-point weights), plus ``num_points`` and ``offset_grad_scale`` (the factor of the
    gradient of the sampling locations, default 0.1 as in the authors' code; 1 turns it off).
    DGE's pooled queries sample around the centre of their patch. ``dge=False`` (or
    :class:`DPVT`) is the static DPVT.
    """

    def __init__(self, arch='small', num_points: int = 4, offset_grad_scale: float = 0.1,
                 **kwargs):
        self.num_points = num_points  # a plain int, read by build_block during __init__
        self.offset_grad_scale = offset_grad_scale
        super().__init__(arch=arch, **kwargs)

    def build_block(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                    **kwargs) -> nn.Module:
        """A :class:`DPVTBlock` (``sr_ratio`` unused)."""
        return DPVTBlock(embed_dims, num_heads, mlp_ratio=mlp_ratio, num_points=self.num_points,
                         offset_grad_scale=self.offset_grad_scale, **kwargs)

    def init_weights(self):
        super().init_weights()
        if find_pretrained_cfg(self.init_cfg) is None:
            for m in self.modules():
                if isinstance(m, DeformablePointAttention):
                    m.init_offsets()


@MODELS.register_module()
@check_arguments
class DPVT(DGEDPVT):
    """The static DPVT (``DGEDPVT`` with ``dge=False``)."""

    def __init__(self, arch='small', dge: bool = False, **kwargs):
        super().__init__(arch=arch, dge=dge, **kwargs)
