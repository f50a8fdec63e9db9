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
    ``img_shape = (H, W)``.
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
``force_full``
    ``bool`` attribute. When True every gate is on and the module computes exactly what the static
    model with the same weights computes (the "eval, full" mode). :func:`full_compute` sets it
    on every dynamic module of a model for a ``with`` block.
"""
import contextlib
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn


class DynamicModuleMixin:
    """Adds the bookkeeping of the dynamic-module interface to an ``nn.Module``."""

    is_dynamic_module = True
    force_full = False

    def reset_dynamic_records(self) -> None:
        self.last_flops: Optional[torch.Tensor] = None
        self.last_stats: Dict[str, torch.Tensor] = {}
        self.expected_cost: Optional[torch.Tensor] = None
        self.last_maps: Dict[str, torch.Tensor] = {}
        self.aux_losses: Dict[str, torch.Tensor] = {}

    def record_dynamic(self, flops: torch.Tensor, stats: Optional[Dict[str, torch.Tensor]] = None,
                       expected_cost: Optional[torch.Tensor] = None,
                       maps: Optional[Dict[str, torch.Tensor]] = None) -> None:
        self.last_flops = flops.detach().to(torch.float64)
        self.last_stats = {k: v.detach().float() for k, v in (stats or {}).items()}
        self.expected_cost = expected_cost
        self.last_maps = {k: v.detach() for k, v in (maps or {}).items()}

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
def full_compute(model: nn.Module):
    """Within the block every dynamic module of ``model`` runs with every gate on."""
    mods = find_dynamic_modules(model)
    old = [m.force_full for m in mods]
    for m in mods:
        m.force_full = True
    try:
        yield model
    finally:
        for m, o in zip(mods, old):
            m.force_full = o
