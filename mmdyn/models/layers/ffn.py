"""Feed-forward networks of the transformer blocks: a plain MLP (ViT, DeiT, PVT v1) and PVTv2's
MixFFN (a 3x3 depth-wise convolution between the two linears).

Both take ``(x, hw_shape=None, index=None)``. ``index`` (``LongTensor [B, N]``) says where the
``N`` tokens of ``x`` sit in the ``H*W`` grid when ``x`` is a subset of the map (the kept tokens
of a dynamic method, padded per image; a padding slot has index ``-1``). The MLP ignores it;
MixFFN uses it to place the hidden tokens on a zero map for its depth-wise convolution, so the
convolution sees zeros where tokens were not computed.

``MixFFN.forward_subset(x, index, hw)`` is the eval path for such a subset (DiT's kept tokens,
any PVTv2 host): the same result as ``forward(x, hw, index)`` at the kept tokens, but the
depth-wise convolution is evaluated at the kept positions only (``mode='gather'``: each kept
token reads its ``k*k`` neighbours among the kept tokens, a skipped or out-of-map neighbour is
zero), so it costs per kept token, not per map position. ``mode='map'`` places the kept rows on a
zero channels-last map instead and convolves the whole map. ``mode='fused'`` computes what
``'gather'`` does in one operation compiled by ``torch.compile`` (:func:`fused_neighbour_dwconv`).
:meth:`MixFFN.subset_plan` builds the neighbour table once for a token subset, to share it
between the blocks of a stage.
"""
import warnings
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule

from mmdyn.analysis import flops as fl
from .shape_constants import shape_constant

__all__ = ['MLP', 'MixFFN', 'SubsetPlan', 'SUBSET_MODES', 'neighbour_dwconv',
           'fused_neighbour_dwconv']

#: the modes of :meth:`MixFFN.subset_plan` (the same result in each)
SUBSET_MODES = ('gather', 'fused', 'map')


class MLP(BaseModule):
    """``fc1 -> act -> drop -> fc2 -> drop``.

    ``in_dims`` (default ``embed_dims``): channels ``fc1`` reads, e.g. the tokens with extra
    features concatenated (DVT's feature reuse); ``fc2`` writes ``embed_dims``."""

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.,
                 init_cfg=None,
                 in_dims: Optional[int] = None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.hidden_dims = hidden_dims
        self.in_dims = embed_dims if in_dims is None else int(in_dims)
        self.fc1 = nn.Linear(self.in_dims, hidden_dims)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]] = None,
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))

    def flops(self, num_tokens, num_dw_tokens=None):
        """MACs for ``num_tokens`` tokens (``num_dw_tokens`` is accepted and ignored)."""
        return fl.mlp_flops(num_tokens, self.embed_dims, self.hidden_dims,
                            in_dims=None if self.in_dims == self.embed_dims else self.in_dims)


class SubsetPlan(NamedTuple):
    """Where a token subset sits on its map, for :meth:`MixFFN.forward_subset`.

    ``mode='gather'`` or ``'fused'``: ``nbr`` (``Long[B * L, k*k]``) is, for every slot, the row
    of each of its ``k*k`` neighbours in the table of the ``B * L`` subset rows followed by one
    zero row (row ``B * L``: a neighbour outside the map, not in the subset, or any neighbour of
    a padding slot). ``mode='map'``: ``rows`` (``Long[B * L]``) is each slot's row in a
    ``[B*H*W, C]`` map, ``valid`` (``Bool[B * L]`` or None when every slot is real) marks the
    real slots, and ``grid`` is that zero map, shared by the MixFFNs the plan is used for (each
    writes only the subset rows, so the other rows stay zero: one zero fill per subset, not per
    block).
    """
    mode: str
    hw: tuple
    kernel_size: int
    nbr: Optional[torch.Tensor] = None
    rows: Optional[torch.Tensor] = None
    valid: Optional[torch.Tensor] = None
    grid: Optional[torch.Tensor] = None


@shape_constant
def map_neighbours(h: int, w: int, k: int, device=None) -> torch.Tensor:
    """``Long[H*W + 1, k*k]``: the map position of every position's ``k*k`` neighbours (row
    major), ``H*W`` where a neighbour falls outside the map; the extra last row is all ``H*W``
    (the neighbours of a padding slot). Cached per shape and device: do not modify."""
    p = k // 2
    d = torch.arange(-p, p + 1, device=device)
    y = torch.arange(h, device=device)[:, None, None, None] + d[:, None]   # [H, 1, k, 1]
    x = torch.arange(w, device=device)[None, :, None, None] + d[None, :]   # [1, W, 1, k]
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    at = torch.where(inside, y * w + x, torch.full_like(y * w + x, h * w))
    return torch.cat([at.reshape(h * w, k * k),
                      torch.full((1, k * k), h * w, dtype=at.dtype, device=device)])


def _subset_neighbours(index: torch.Tensor, hw: Sequence[int], k: int) -> torch.Tensor:
    """``Long[B * L, k*k]`` neighbour rows of :class:`SubsetPlan` (``index``: ``[B, L]``, -1
    marks padding)."""
    b, l = index.shape
    n = int(hw[0]) * int(hw[1])
    zero = b * l
    pos = torch.where(index >= 0, index, torch.full_like(index, n)).long()  # padding: n
    # map position -> row of the subset table (the zero row where no kept token sits; the
    # padding slots all land on position n, which is reset to the zero row)
    lookup = torch.full((b, n + 1), zero, dtype=torch.long, device=index.device)
    lookup.scatter_(1, pos, torch.arange(zero, device=index.device).view(b, l))
    lookup[:, n] = zero
    at = map_neighbours(int(hw[0]), int(hw[1]), k, device=index.device).index_select(
        0, pos.reshape(-1))
    return lookup.gather(1, at.view(b, l * k * k)).view(zero, k * k)


def neighbour_dwconv(h: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Depth-wise convolution at ``R`` rows from their neighbours' rows: ``h`` ``[R, C]``,
    ``nbr`` ``Long[R, k*k]`` (row ``R``: a zero row), ``weight`` ``[k*k, C]``, ``bias`` ``[C]``
    or None. Written as one expression for :func:`fused_neighbour_dwconv` to compile; run
    eagerly it materialises ``[R, k*k, C]``."""
    table = torch.cat([h, h.new_zeros(1, h.shape[1])])
    out = (table[nbr] * weight).sum(1)
    return out if bias is None else out + bias


class _Compiled:
    """The process's compiled :func:`neighbour_dwconv` and why it could not be compiled."""
    fn = None
    error: Optional[str] = None


def fused_neighbour_dwconv(h: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """:func:`neighbour_dwconv` compiled by ``torch.compile`` (inductor, dynamic shapes: one
    compilation per process and dtype serves every row count and width; about 3-15 s the first
    time, then cached on disk by PyTorch): one loop on CPU, one kernel on CUDA, which reads
    each row's ``k*k`` neighbours and never writes them out. The eager loop of
    :meth:`MixFFN.forward_subset` (``'gather'``) makes a copy and a multiply-add pass per
    neighbour instead.

    Returns None where the compiled function is not used, for the caller to run the eager
    loop: with autograd recording (training), under ``torch.jit.trace``, or when compiling
    failed in this process (e.g. no C++ compiler for inductor; warned once). Inside an outer
    ``torch.compile`` it runs as this compiled function, outside the outer graph (a graph
    break): traced into that graph, inductor's code for it made DiT-B2's compiled forward at
    224 3.6x slower than eager (docs/complexity.md, "``torch.compile``")."""
    if torch.compiler.is_compiling():
        return _fused_outside_compile(h, nbr, weight, bias)
    if _Compiled.error is not None or torch.jit.is_tracing() or (
            torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)):
        return None
    if _Compiled.fn is None:
        _Compiled.fn = torch.compile(neighbour_dwconv, dynamic=True)
    try:
        return _Compiled.fn(h, nbr, weight, bias)
    except Exception as e:  # noqa: BLE001 (any backend failure: fall back, once, loudly)
        _Compiled.error = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
        warnings.warn("MixFFN: sparse depth-wise mode 'fused' could not be compiled "
                      f"({_Compiled.error}); using the eager 'gather' loop in this process",
                      RuntimeWarning, stacklevel=2)
        return None


@torch.compiler.disable
def _fused_outside_compile(h, nbr, weight, bias):
    """:func:`fused_neighbour_dwconv` called from inside an outer compilation, run outside it
    (the expression eagerly where the compiled function is not used)."""
    out = fused_neighbour_dwconv(h, nbr, weight, bias)
    return neighbour_dwconv(h, nbr, weight, bias) if out is None else out


class MixFFN(BaseModule):
    """PVTv2 FFN: ``fc1 -> [ReLU if linear] -> dwconv 3x3 -> act -> drop -> fc2 -> drop``.

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Hidden width.
        kernel_size (int): Depth-wise kernel. Default 3 (padding keeps the map size).
        linear (bool): PVTv2-Li adds a ReLU after ``fc1``. Default False.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 kernel_size: int = 3,
                 linear: bool = False,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.hidden_dims = hidden_dims
        self.kernel_size = kernel_size
        self.linear = linear
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.relu = nn.ReLU() if linear else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, kernel_size,
                                padding=kernel_size // 2, groups=hidden_dims)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def _dw(self, h: torch.Tensor, hw_shape: Sequence[int],
            index: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = h.shape
        hh, ww = hw_shape
        if index is None:
            if n != hh * ww:
                raise ValueError(f'MixFFN got {n} tokens for a {hh}x{ww} map; pass `index` '
                                 'when the tokens are a subset of the map')
            # a channels-last view: no copy, and the faster depth-wise kernel on CPU
            m = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
            return self.dwconv(m).permute(0, 2, 3, 1).reshape(b, n, c)
        if index.shape != (b, n):
            raise ValueError(f'index must be [B, N] = {(b, n)}, got {tuple(index.shape)}')
        # slot H*W collects the padding (index -1) and is dropped
        idx = torch.where(index < 0, torch.full_like(index, hh * ww), index).long()
        grid = h.new_zeros(b, hh * ww + 1, c)
        grid.scatter_(1, idx[..., None].expand(-1, -1, c), h)
        m = grid[:, :hh * ww].reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        m = self.dwconv(m).permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        m = torch.cat([m, m.new_zeros(b, 1, c)], dim=1)
        return m.gather(1, idx[..., None].expand(-1, -1, c))

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int],
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        if hw_shape is None:
            raise ValueError('MixFFN needs hw_shape for its depth-wise convolution')
        h = self.relu(self.fc1(x))
        h = self.drop(self.act(self._dw(h, hw_shape, index)))
        return self.drop(self.fc2(h))

    def subset_plan(self, index: torch.Tensor, hw_shape: Sequence[int],
                    mode: str = 'gather', dtype: Optional[torch.dtype] = None) -> SubsetPlan:
        """Where the tokens ``index`` (``Long[B, L]``, their positions in the ``H*W`` map, -1 for
        padding slots) sit, for :meth:`forward_subset`; build it once per token subset and
        pass it to every MixFFN of that map with the same kernel size (and, for ``'map'``,
        the same hidden width: the zero map of ``dtype``, default the fc1 weight's, is shared)."""
        if index.dim() != 2:
            raise ValueError(f'index must be [B, L], got shape {tuple(index.shape)}')
        hw = (int(hw_shape[0]), int(hw_shape[1]))
        if mode in ('gather', 'fused'):
            return SubsetPlan(mode, hw, self.kernel_size,
                              nbr=_subset_neighbours(index, hw, self.kernel_size))
        if mode == 'map':
            base = torch.arange(index.shape[0], device=index.device)[:, None] * (hw[0] * hw[1])
            valid = (index >= 0).reshape(-1)
            grid = torch.zeros(index.shape[0] * hw[0] * hw[1], self.hidden_dims,
                               dtype=dtype or self.fc1.weight.dtype, device=index.device)
            return SubsetPlan('map', hw, self.kernel_size,
                              rows=(index.clamp(min=0) + base).reshape(-1),
                              valid=None if bool(valid.all()) else valid, grid=grid)
        raise ValueError(f'mode must be one of {SUBSET_MODES}, got {mode!r}')

    def forward_subset(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
                       hw_shape: Optional[Sequence[int]] = None,
                       plan: Optional[SubsetPlan] = None) -> torch.Tensor:
        """The FFN of a token subset ``x`` (``[B, L, C]``) of an ``hw_shape`` map whose other
        positions are zero for the depth-wise convolution: equal to ``forward(x, hw_shape,
        index)`` (at the real slots). Give ``index`` and ``hw_shape`` (a ``'gather'`` plan is
        built) or a ``plan`` from :meth:`subset_plan`."""
        if plan is None:
            if index is None or hw_shape is None:
                raise ValueError('forward_subset needs `index` and `hw_shape`, or a `plan`')
            plan = self.subset_plan(index, hw_shape)
        if plan.kernel_size != self.kernel_size:
            raise ValueError(f'plan is for a {plan.kernel_size}x{plan.kernel_size} kernel, '
                             f'this MixFFN has {self.kernel_size}')
        b, l, _ = x.shape
        h = self.relu(self.fc1(x)).reshape(b * l, self.hidden_dims)
        if plan.mode == 'map':
            m = self._dw_map(h, b, plan)
        else:
            m = self._dw_gather(h, plan.nbr, fused=plan.mode == 'fused')
        h = self.drop(self.act(m.view(b, l, self.hidden_dims)))
        return self.drop(self.fc2(h))

    def _dw_gather(self, h: torch.Tensor, nbr: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """Depth-wise convolution at the subset rows ``h`` only (``[R, C]``): with ``fused`` as
        one compiled operation (:func:`fused_neighbour_dwconv`) where it runs, else as an eager
        copy and multiply-add per neighbour."""
        if nbr.shape[0] != h.shape[0]:
            raise ValueError(f'plan has {nbr.shape[0]} slots, x has {h.shape[0]}')
        c = h.shape[1]
        wt = self.dwconv.weight.reshape(c, -1).t().contiguous()   # [k*k, C]
        bias = self.dwconv.bias
        if fused:
            # plain tensors, not parameters: torch.compile keeps parameter shapes static, which
            # would compile once per width
            out = fused_neighbour_dwconv(h, nbr, wt, None if bias is None else bias.detach())
            if out is not None:
                return out
        table = torch.cat([h, h.new_zeros(1, c)])
        centre = nbr.shape[1] // 2  # a real slot's centre neighbour is itself
        out = h * wt[centre] if bias is None else torch.addcmul(bias, h, wt[centre])
        # without autograd, one buffer holds the neighbour rows of every offset in turn
        buf = None if torch.is_grad_enabled() else torch.empty_like(h)
        for t in range(nbr.shape[1]):
            if t != centre:
                out.addcmul_(torch.index_select(table, 0, nbr[:, t], out=buf)
                             if buf is not None else table.index_select(0, nbr[:, t]), wt[t])
        return out

    def _dw_map(self, h: torch.Tensor, b: int, plan: SubsetPlan) -> torch.Tensor:
        """Depth-wise convolution of the subset rows ``h`` placed on a zero channels-last map
        (the plan's map: only the subset rows are written, the others stay zero)."""
        hh, ww = plan.hw
        c = h.shape[1]
        grid = plan.grid
        # the plan's map is shared by the blocks: with autograd each call takes its own
        if grid is None or grid.shape != (b * hh * ww, c) or grid.dtype != h.dtype or \
                torch.is_grad_enabled():
            grid = h.new_zeros(b * hh * ww, c)
        if plan.valid is None:
            grid.index_copy_(0, plan.rows, h)
        else:
            grid.index_copy_(0, plan.rows[plan.valid], h[plan.valid])
        # [B, H, W, C] memory seen as NCHW: a channels-last map, no copy
        m = self.dwconv(grid.view(b, hh, ww, c).permute(0, 3, 1, 2))
        return m.permute(0, 2, 3, 1).reshape(b * hh * ww, c).index_select(0, plan.rows)

    def flops(self, num_tokens, num_dw_tokens=None):
        """MACs for ``num_tokens`` tokens; the depth-wise convolution is counted at
        ``num_dw_tokens`` positions (default ``num_tokens``)."""
        return fl.mixffn_flops(num_tokens, self.embed_dims, self.hidden_dims, self.kernel_size,
                               num_dw_tokens)
