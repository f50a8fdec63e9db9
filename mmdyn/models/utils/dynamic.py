"""The interface every dynamic module of mmdyn implements.

A *dynamic module* (a backbone, or a part of one) spends different compute per image. After each
forward it records what actually ran, per image, so that hooks, metrics and tools can read it
without knowing the method:

``last_flops``
    ``Tensor[B]`` (float64, detached): realised FLOPs of the module's last forward, per image, in
    the project's unit (one multiply-add = one FLOP, i.e. MACs; see the README).
``last_stats``
    ``dict[str, Tensor[B]]``: per-image ratios in [0, 1] of the last forward, with standard keys
    where they apply: ``kept_ratio`` (tokens kept / tokens possible), ``fine_ratio`` (fine-grained
    tokens / all), ``exit_ratio`` (images that exited early, 0/1 per image), ``flops_ratio``
    (``last_flops / static_flops``). Methods may add their own keys.
``static_flops(img_shape)``
    FLOPs of the same module with every gate on (the static model), for an input of
    ``img_shape = (H, W)`` (an int is a square; anything else, e.g. a 4-D ``x.shape``, is a
    ``ValueError``: :func:`image_hw` reads it).
``expected_cost``
    In training: a differentiable tensor (scalar or ``[B]``) of the expected cost ratio, which
    budget losses use. ``None`` when not applicable.
``last_maps``
    ``dict[str, Tensor[B, h, w]]``: the token decisions of the last forward, one map per decision
    point (a stage, a gate), on that point's token grid: 0/1 masks (kept, fine) or small integer
    choices (a scale, an exit stage). Tools draw them over the image.
``aux_losses``
    ``dict[str, Tensor]`` set in a training forward with :meth:`set_aux_losses`: losses the
    method adds to the model's loss (budget, gate losses). ``attach_dynamic_records`` (installed
    by ``mmdyn.DynamicStatsHook``) adds them to the top-level model's loss dict and empties it.
``block_table()``
    One row per block (per decision point) of the last forward, averaged over its images, in
    one schema for every method: ``block`` (str, the block's name), ``tokens`` (float, tokens
    the block ran per image, extra tokens such as a class token included), ``kept_ratio``
    (float, the mean over images of those tokens over the tokens the static block runs) and
    ``flops`` (float, MACs of the block per image). A method may add columns after these (DiT:
    ``reached``, ``skip_reached``). A ``RuntimeError`` before the first forward. A method either
    hands :meth:`record_dynamic` per-block ``blocks`` (averaged here) or overrides
    :meth:`_block_rows`.
``force_full``
    ``bool`` attribute. When True every gate is on and the module computes exactly what the static
    model with the same weights computes (the "eval, full" mode). :func:`full_compute` sets it
    on every dynamic module of a model for a ``with`` block.
``decision_override``
    ``None`` (the module's own rule decides) or the dict of the decisions imposed instead, for
    benchmarks, FLOPs studies, tests and diagnostics. Set it with :func:`override_decisions`
    (a ``with`` block that restores the learned decisions after),
    :meth:`~DynamicModuleMixin.set_decision_override` or by assigning the attribute (the same
    call: validated and applied); each method accepts its own keys
    (``OVERRIDE_KEYS``) and implements :meth:`~DynamicModuleMixin._set_decision_override`:

    * DGE: ``fractions`` (one probability per granularity, each region draws one, seeded by
      the region grid) or ``choice`` (a granularity index, ``('phi', value)`` or a callable
      ``logits[B, gh, gw, K] -> Long[B, gh, gw]``);
    * DiT: ``keep_ratio`` (every reached stage keeps the :func:`evenly_spaced` tokens; no gate
      runs) with ``columns`` (``'pvt'``, default, or ``'all'``), or ``decisions``
      (``{('row', i, j): [B, N] 0/1, ('col', i, j): [B] 0/1}``, ranked first);
    * DoViT: ``keep_ratios`` (one float for every decision layer or one per layer,
      non-increasing: decision ``k`` keeps the ``round(r_k N)`` least confident tokens);
    * MSViT: ``fine_ratio`` (``round(r n)`` fine regions of ``n``, :func:`evenly_spaced`) or
      ``fine_map`` (a ``[hc, wc]`` / ``[B, hc, wc]`` 0/1 map).

    A backbone's ``decision_override=`` constructor argument sets the same dict at build time
    (for config variants such as ``configs/dit/dit-b2-forced-half_8xb128_in1k.py`` and
    ``--cfg-options model.backbone.decision_override.keep_ratio=0.5``).
"""
import contextlib
import warnings
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn


BLOCK_TABLE_KEYS = ('block', 'tokens', 'kept_ratio', 'flops')


class BlockRecord(NamedTuple):
    """What one block ran in a forward: ``tokens`` and ``flops`` per image (``Tensor[B]`` or a
    number for every image), ``full_tokens`` the tokens of the static block."""
    block: str
    tokens: Union[torch.Tensor, float]
    full_tokens: float
    flops: Union[torch.Tensor, float]


def _image_mean(v) -> float:
    return float(torch.as_tensor(v, dtype=torch.float64).mean())


def _detached(t: torch.Tensor) -> torch.Tensor:
    """``t`` outside autograd: itself when it needs no gradient (no operator call: a forward
    records a few per layer), else ``t.detach()``."""
    return t.detach() if t.requires_grad else t


class DynamicModuleMixin:
    """Adds the bookkeeping of the dynamic-module interface to an ``nn.Module``."""

    is_dynamic_module = True
    force_full = False
    @property
    def decision_override(self) -> Optional[dict]:
        """The decisions imposed instead of the module's own (see the module docstring), or
        ``None``. Assigning it is :meth:`set_decision_override` (validated and applied)."""
        return self.__dict__.get('_decision_override')

    @decision_override.setter
    def decision_override(self, spec: Optional[dict]) -> None:
        self.set_decision_override(spec)

    def decision_map_style(self, key: str) -> Tuple[Optional[int], Optional[bool]]:
        """``(stride, binary)`` of ``last_maps[key]`` for drawing it: the input pixels one map
        cell covers (cell ``j`` covers pixels ``[j * stride, (j + 1) * stride)`` from the
        top-left; ``None``: unknown, or a map that covers the whole input) and whether it is a
        0/1 map (kept / fine tokens: ``True``), a map of choices (``False``) or unknown
        (``None``). Methods override it; see :func:`mmdyn.visualization.map_to_image`."""
        return None, None

    #: the keys :meth:`set_decision_override` accepts; empty: the module takes no override
    OVERRIDE_KEYS: Tuple[str, ...] = ()

    def set_decision_override(self, spec: Optional[dict]) -> None:
        """Impose ``spec`` (a dict of :attr:`OVERRIDE_KEYS`) instead of the module's own
        decisions until the next call; ``None`` gives the decisions back to the module.
        :func:`override_decisions` does the same for a ``with`` block."""
        name = type(self).__name__
        if spec is not None:
            if not isinstance(spec, dict):
                raise ValueError(f'{name}: a decision override is a dict of '
                                 f'{list(self.OVERRIDE_KEYS)}, got {spec!r}')
            bad = sorted(set(spec) - set(self.OVERRIDE_KEYS))
            if not self.OVERRIDE_KEYS or bad or not spec:
                raise ValueError(f'{name}: a decision override takes the keys '
                                 f'{list(self.OVERRIDE_KEYS)}, got {sorted(spec)}')
            spec = dict(spec)
        self.__dict__['_decision_override'] = self._set_decision_override(spec)

    def _set_decision_override(self, spec: Optional[dict]) -> Optional[dict]:
        """The method's hook: validate ``spec`` (known keys only, or ``None``), prepare what
        its forward reads and return the spec to store as :attr:`decision_override`."""
        if spec is not None:
            raise ValueError(f'{type(self).__name__} takes no decision override')
        return None

    def reset_dynamic_records(self) -> None:
        self.last_flops: Optional[torch.Tensor] = None
        self.last_stats: Dict[str, torch.Tensor] = {}
        self.expected_cost: Optional[torch.Tensor] = None
        self.last_maps: Dict[str, torch.Tensor] = {}
        self.aux_losses: Dict[str, torch.Tensor] = {}
        self.last_blocks: Optional[List[BlockRecord]] = None

    def record_dynamic(self, flops: torch.Tensor, stats: Optional[Dict[str, torch.Tensor]] = None,
                       expected_cost: Optional[torch.Tensor] = None,
                       maps: Optional[Dict[str, torch.Tensor]] = None,
                       blocks: Optional[List[BlockRecord]] = None) -> None:
        """Store the records of a forward (see the module docstring). ``last_flops``,
        ``last_stats`` and ``last_maps`` go to the device the module (hence its input) is on,
        whatever device the method counted on."""
        dev = self._records_device(flops)
        self.last_flops = _detached(flops).to(dev, torch.float64)
        self.last_stats = {k: _detached(v).to(dev, torch.float32)
                           for k, v in (stats or {}).items()}
        self.expected_cost = expected_cost
        self.last_maps = {k: _detached(v).to(dev) for k, v in (maps or {}).items()}
        self.last_blocks = None if blocks is None else [
            BlockRecord(*(_detached(v) if isinstance(v, torch.Tensor) else v for v in b))
            for b in blocks]

    def _records_device(self, fallback: torch.Tensor) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return fallback.device

    def set_aux_losses(self, losses: Dict[str, torch.Tensor]) -> None:
        """Hand losses to the model's loss dict (see ``aux_losses`` above).

        Warns once if the losses of the previous training forward were never consumed, which
        means no ``attach_dynamic_records`` hook is installed and the losses are not trained.
        """
        if getattr(self, 'aux_losses', None) and not getattr(self, '_aux_warned', False):
            self._aux_warned = True
            warnings.warn(
                f'{type(self).__name__}: the auxiliary losses {sorted(self.aux_losses)} of the '
                'previous training forward were not added to the loss. Add '
                "custom_hooks=[dict(type='mmdyn.DynamicStatsHook')] to the config (or call "
                'mmdyn.models.utils.records.attach_dynamic_records(model)).')
        bad = [k for k in losses if not k.startswith('loss')]
        if bad:
            raise ValueError(f'auxiliary loss names must start with "loss": {bad}')
        self.aux_losses = dict(losses)

    def static_flops(self, img_shape: Tuple[int, int]) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def block_table(self) -> List[Dict[str, Union[str, float]]]:
        """Per block of the last forward, averaged over its images (schema: module docstring)."""
        if getattr(self, 'last_flops', None) is None:
            raise RuntimeError(f'{type(self).__name__}.block_table: run a forward first')
        rows = self._block_rows()
        for r in rows:
            if tuple(r)[:len(BLOCK_TABLE_KEYS)] != BLOCK_TABLE_KEYS:
                raise KeyError(f'{type(self).__name__}.block_table: a row starts with '
                               f'{tuple(r)[:4]}, not {BLOCK_TABLE_KEYS}')
        return [{k: str(v) if k == 'block' else float(v) for k, v in r.items()} for r in rows]

    def _block_rows(self) -> List[Dict[str, Union[str, float]]]:
        """The rows of :meth:`block_table` from the ``blocks`` handed to :meth:`record_dynamic`;
        methods that keep their own per-block records override this."""
        if getattr(self, 'last_blocks', None) is None:
            raise NotImplementedError(f'{type(self).__name__} records no per-block table')
        return [dict(block=b.block, tokens=_image_mean(b.tokens),
                     kept_ratio=_image_mean(torch.as_tensor(b.tokens, dtype=torch.float64)
                                            / b.full_tokens),
                     flops=_image_mean(b.flops)) for b in self.last_blocks]


def image_hw(img_shape) -> Tuple[int, int]:
    """``(H, W)`` of an image shape given as ``(H, W)`` or one int (a square).

    Every ``static_flops`` / FLOPs function of mmdyn reads its ``img_shape`` through this, so
    that a wrong-length shape (``x.shape`` of a batch, ``(C, H, W)``) is an error that says so
    rather than a silently wrong number.
    """
    if isinstance(img_shape, (int, np.integer)) and not isinstance(img_shape, bool):
        hw = (int(img_shape), int(img_shape))
    elif isinstance(img_shape, (tuple, list, torch.Size)) and len(img_shape) == 2:
        hw = (int(img_shape[0]), int(img_shape[1]))
    else:
        raise ValueError(f'img_shape must be (H, W) or one int, got {img_shape!r}'
                         ' (for an input x [B, C, H, W] pass x.shape[-2:])')
    if min(hw) < 1:
        raise ValueError(f'img_shape must be positive, got {img_shape!r}')
    return hw


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside its wrappers (mmengine's ``MMDistributedDataParallel`` and every
    registered wrapper, torch's ``DataParallel`` / ``DistributedDataParallel``)."""
    from mmengine.model import is_model_wrapper
    while is_model_wrapper(model):
        model = model.module
    return model


def find_dynamic_modules(model: nn.Module) -> List[nn.Module]:
    """Outermost dynamic modules of ``model`` (nested dynamic modules are not listed twice)."""
    found = []

    def visit(m):
        if getattr(m, 'is_dynamic_module', False):
            found.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return found


def collect_dynamic_records(model: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
    """Per-image records of the last forward summed over the model's dynamic modules.

    Returns ``None`` when the model has no dynamic module or none has run yet; else a dict with
    ``flops`` (``Tensor[B]``) and every ``last_stats`` key (averaged over modules that report it).
    """
    mods = [m for m in find_dynamic_modules(model) if getattr(m, 'last_flops', None) is not None]
    if not mods:
        return None
    out = {'flops': sum(m.last_flops for m in mods)}
    keys = {k for m in mods for k in m.last_stats}
    for k in keys:
        vals = [m.last_stats[k] for m in mods if k in m.last_stats]
        out[k] = sum(vals) / len(vals)
    return out


@contextlib.contextmanager
def attributes_set(modules: List[nn.Module], name: str, value):
    """Within the block ``m.<name> = value`` for every module ``m`` of ``modules``; each
    module's own value is restored after, also when the block raises."""
    old = [getattr(m, name) for m in modules]
    for m in modules:
        setattr(m, name, value)
    try:
        yield modules
    finally:
        for m, o in zip(modules, old):
            setattr(m, name, o)


def evenly_spaced(n: int, ratio: float, device=None) -> torch.Tensor:
    """``Bool[n]``: the one evenly spaced selection of mmdyn's decision overrides. Position
    ``i`` is selected when ``floor((i + 1) r) > floor(i r)``, which selects ``floor(n r)``
    positions (a ratio ``k / n`` selects exactly ``k``), made on ``device``."""
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    c = torch.floor(k * float(ratio) + 1e-9)
    return c[1:] > c[:-1]


def removed_override_arguments(**renamed: str) -> Dict[str, str]:
    """``REMOVED_ARGUMENTS`` of a backbone whose old constructor arguments became keys of
    ``decision_override`` (``renamed``: old name -> new key): what to use instead, which
    :func:`mmdyn.utils.arguments.check_arguments` puts in its one-line error."""
    return {old: f'use decision_override=dict({new}=...) or '
                 f'mmdyn.models.utils.override_decisions(model, {new}=...)'
            for old, new in renamed.items()}


@contextlib.contextmanager
def override_decisions(model: nn.Module, **spec):
    """Within the block every dynamic module of ``model`` that takes a decision override runs
    with the decisions of ``spec`` (keys: the module docstring) instead of its own; each
    module's previous override (usually ``None``: its learned decisions) is restored after,
    also when the block raises. ``ValueError`` when no module of ``model`` takes one."""
    mods = [m for m in find_dynamic_modules(unwrap_model(model)) if m.OVERRIDE_KEYS]
    if not mods:
        raise ValueError(f'override_decisions: {type(model).__name__} has no dynamic module '
                         'that takes a decision override')
    old = [m.decision_override for m in mods]
    try:
        for m in mods:
            m.set_decision_override(spec)
        yield model
    finally:
        for m, o in zip(mods, old):
            m.set_decision_override(o)


def takes_decision_override(model: nn.Module) -> bool:
    """Whether a dynamic module of ``model`` takes a decision override."""
    return any(m.OVERRIDE_KEYS for m in find_dynamic_modules(unwrap_model(model)))


def decisions_overridden(model: nn.Module, spec: Optional[dict]):
    """:func:`override_decisions` with ``spec`` when it is given and ``model`` takes a
    decision override, else a null context: what tools use to force the dynamic model of a
    pair and time or draw a static one as it is."""
    if not spec or not takes_decision_override(model):
        return contextlib.nullcontext(model)
    return override_decisions(model, **spec)


@contextlib.contextmanager
def full_compute(model: nn.Module):
    """Within the block every dynamic module of ``model`` runs with every gate on."""
    with attributes_set(find_dynamic_modules(model), 'force_full', True):
        yield model
