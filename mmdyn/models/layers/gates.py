"""Hard gates with straight-through gradients.

Two gates share one design:

* :class:`GumbelSoftmaxGate` picks one of ``K`` choices per token (DiT routing, DGE granularity).
* :class:`GumbelSigmoidGate` takes a binary decision per token (MSViT scale gate).

In training the decision is sampled with Gumbel (resp. logistic) noise: the forward value is an
exact one-hot (resp. 0/1) tensor and the gradient is that of the relaxed sample
``softmax((logits + g) / tau)`` (resp. ``sigmoid((logit + l) / tau)``), the straight-through
estimator. In eval the rule is deterministic and noise-free: ``argmax`` of the logits (resp.
``sigmoid(logit) > threshold``).

``tau`` is a plain float attribute, so a schedule hook can move it during training.

Optionally (``momentum`` not ``None``) a gate keeps an exponential moving average of its
projection weights in buffers (saved in checkpoints), ``ema <- m * ema + (1 - m) * w``, updated by
:meth:`momentum_update` (see :class:`mmdyn.engine.hooks.GateMomentumHook`) and used instead of the
live weights in eval, as DiT does for stable inference.
"""
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from mmdyn.registry import MODELS, build_in_mmdyn_scope


class GateOutput(NamedTuple):
    """What a gate returns.

    Attributes:
        decision (Tensor): Hard decisions as floats: one-hot ``[..., K]`` (categorical) or 0/1
            ``[...]`` (binary). In training the gradient flows through ``soft``
            (straight-through); in eval it carries no gradient.
        soft (Tensor): In training the relaxed noisy sample behind ``decision``; in eval the
            noise-free selection probabilities ``softmax(logits)`` / ``sigmoid(logits)``. This is
            what gate losses (L0, batch-shaping) constrain.
        logits (Tensor): Raw logits, ``[..., K]`` or ``[...]``.
    """
    decision: torch.Tensor
    soft: torch.Tensor
    logits: torch.Tensor


class _StraightThrough(torch.autograd.Function):
    """Forward returns ``hard`` exactly; backward hands the gradient to ``soft`` unchanged."""

    @staticmethod
    def forward(ctx, soft, hard):
        return hard.to(soft.dtype).clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Return a tensor equal to ``hard`` whose gradient is routed to ``soft``.

    Unlike ``hard - soft.detach() + soft`` the forward value is bit-exact ``hard``.

    Args:
        soft (Tensor): Differentiable relaxed values.
        hard (Tensor): Discrete values of the same shape (any dtype, no gradient).

    Returns:
        Tensor: ``hard`` in ``soft``'s dtype.
    """
    if soft.shape != hard.shape:
        raise ValueError(f'soft {tuple(soft.shape)} and hard {tuple(hard.shape)} shapes differ')
    return _StraightThrough.apply(soft, hard)


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f'temperature tau must be > 0, got {tau}')


def sample_gumbel(shape, device=None, dtype=None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(E)``, ``E ~ Exp(1)`` (never infinite in practice)."""
    e = torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator)
    return -e.clamp_min(torch.finfo(e.dtype).tiny).log()


def sample_logistic(shape, device=None, dtype=None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard logistic noise ``log(u) - log(1 - u)`` (the difference of two Gumbels)."""
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    eps = torch.finfo(u.dtype).eps
    u = u.clamp(eps, 1 - eps)
    return u.log() - torch.log1p(-u)


def _noise_for(logits: torch.Tensor, noise: Optional[torch.Tensor], sample: Callable,
               generator: Optional[torch.Generator]) -> torch.Tensor:
    """``noise`` when given (of ``logits``' shape), else ``sample(shape, device, dtype,
    generator)``."""
    if noise is None:
        return sample(logits.shape, logits.device, logits.dtype, generator)
    if noise.shape != logits.shape:
        raise ValueError(f'noise shape {tuple(noise.shape)} != logits shape '
                         f'{tuple(logits.shape)}')
    return noise


def gumbel_softmax_st(logits: torch.Tensor, tau: float = 1.0, dim: int = -1,
                      noise: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> GateOutput:
    """Hard Gumbel-Softmax sample with straight-through gradient.

    Args:
        logits (Tensor): Unnormalised log-probabilities, choices along ``dim``.
        tau (float): Temperature of the relaxation (> 0).
        dim (int): The choice dimension.
        noise (Tensor, optional): Gumbel noise of ``logits``' shape; sampled when ``None``.
        generator (torch.Generator, optional): RNG for the noise.

    Returns:
        GateOutput: one-hot ``decision`` (gradient of ``soft``), ``soft`` =
        ``softmax((logits + noise) / tau)``, ``logits``.
    """
    _check_tau(tau)
    noise = _noise_for(logits, noise, sample_gumbel, generator)
    soft = F.softmax((logits + noise) / tau, dim=dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return GateOutput(straight_through(soft, hard), soft, logits)


def categorical_eval(logits: torch.Tensor, dim: int = -1,
                     index: Optional[torch.Tensor] = None) -> GateOutput:
    """Deterministic categorical rule: one-hot ``argmax(logits)``, no noise, no gradient.

    Args:
        index (Tensor, optional): The choices (``Long``, the shape of ``logits`` without
            ``dim``) when the caller has them already (its argmax, or imposed ones): their
            one-hot is the decision.

    Returns:
        GateOutput: one-hot ``decision``, ``soft = softmax(logits)``, ``logits``.
    """
    soft = F.softmax(logits, dim=dim)
    index = logits.argmax(dim, keepdim=True) if index is None else index.unsqueeze(dim)
    # one-hot by a scatter (F.one_hot checks the index range on the device: a sync)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return GateOutput(hard, soft, logits)


def gumbel_sigmoid_st(logits: torch.Tensor, tau: float = 1.0,
                      noise: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> GateOutput:
    """Hard Gumbel-Sigmoid (binary Concrete) sample with straight-through gradient.

    ``soft = sigmoid((logits + l) / tau)`` with logistic noise ``l``; ``decision = soft > 0.5``,
    i.e. ``logits + l > 0``, which is on with probability ``sigmoid(logits)``.

    Args:
        logits (Tensor): Logits of the "on" decision, any shape.
        tau (float): Temperature (> 0).
        noise (Tensor, optional): Logistic noise of ``logits``' shape; sampled when ``None``.
        generator (torch.Generator, optional): RNG for the noise.

    Returns:
        GateOutput: 0/1 ``decision`` (gradient of ``soft``), ``soft``, ``logits``.
    """
    _check_tau(tau)
    noise = _noise_for(logits, noise, sample_logistic, generator)
    z = logits + noise
    soft = torch.sigmoid(z / tau)
    return GateOutput(straight_through(soft, z > 0), soft, logits)


def binary_eval(logits: torch.Tensor, threshold: float = 0.5) -> GateOutput:
    """Deterministic binary rule: ``sigmoid(logits) > threshold``, no noise, no gradient.

    Returns:
        GateOutput: 0/1 ``decision``, ``soft = sigmoid(logits)``, ``logits``.
    """
    soft = torch.sigmoid(logits)
    return GateOutput((soft > threshold).to(soft.dtype), soft, logits)


class _GateBase(nn.Module):
    """Projection + optional EMA copy of its parameters, shared by both gates."""

    value_ranges = dict(tau=(0.0, None, True, False))  # what a schedule may set

    def __init__(self, in_channels: Optional[int], out_channels: int,
                 proj: Optional[Union[nn.Module, dict]], tau: float,
                 momentum: Optional[float], init_std: float):
        super().__init__()
        _check_tau(tau)
        self.tau = float(tau)
        if proj is None:
            if in_channels is None or in_channels < 1:
                raise ValueError(f'in_channels must be a positive int without a given proj, '
                                 f'got {in_channels}')
            proj = nn.Linear(in_channels, out_channels)
            self._default_proj = True
        else:
            if isinstance(proj, dict):
                proj = build_in_mmdyn_scope(MODELS, proj)
            if not isinstance(proj, nn.Module):
                raise ValueError(f'proj must be an nn.Module or a config dict, got {type(proj)}')
            self._default_proj = False
        self.proj = proj
        self.init_std = init_std
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f'momentum must be in [0, 1) or None, got {momentum}')
        self.momentum = momentum
        self.ema = nn.Module()  # holds the EMA buffers only (no parameters)
        if momentum is not None:
            for name, p in self.proj.named_parameters():
                self.ema.register_buffer(self._ema_name(name), p.detach().clone())
            self.ema.register_buffer('num_updates', torch.zeros((), dtype=torch.long))

    @staticmethod
    def _ema_name(param_name: str) -> str:
        return param_name.replace('.', '__')

    @property
    def uses_ema(self) -> bool:
        """Whether forward runs the projection with the EMA weights (eval with momentum on).

        Until the first :meth:`momentum_update` (e.g. a model loaded from a checkpoint written
        without EMA buffers) the EMA copies equal nothing trained, so the live weights are
        used instead; this choice is made on the device, without a host sync.
        """
        return self.momentum is not None and not self.training

    def ema_state(self) -> Dict[str, torch.Tensor]:
        """EMA copies keyed by the projection's parameter names (empty without momentum)."""
        if self.momentum is None:
            return {}
        return {n: getattr(self.ema, self._ema_name(n)) for n, _ in self.proj.named_parameters()}

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``ema <- m * ema + (1 - m) * w`` for every projection parameter.

        The first update copies the weights (so whatever ``init_weights`` or checkpoint loading
        did to the live weights before training starts is not averaged with stale values). A
        no-op when the gate has no momentum.
        """
        if self.momentum is None:
            return
        first = self.ema.num_updates == 0
        m = self.momentum
        for name, p in self.proj.named_parameters():
            ema = getattr(self.ema, self._ema_name(name))
            w = p.detach().to(ema.dtype)
            ema.copy_(torch.where(first, w, ema * m + w * (1.0 - m)))
        self.ema.num_updates += 1

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise the default projection (a given ``proj`` keeps its own init): weights
        ``N(0, init_std)`` truncated at 2 std, the bias by the gate's ``_init_bias``."""
        if not self._default_proj:
            return
        nn.init.trunc_normal_(self.proj.weight, std=self.init_std,
                              a=-2 * self.init_std, b=2 * self.init_std)
        self._init_bias()

    def _init_bias(self) -> None:
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the projection with live or (in eval, see :attr:`uses_ema`) EMA weights."""
        if self.uses_ema:
            started = self.ema.num_updates > 0
            params = {n: torch.where(started, getattr(self.ema, self._ema_name(n)), p)
                      for n, p in self.proj.named_parameters()}
            return functional_call(self.proj, params, (x,))
        return self.proj(x)


@MODELS.register_module()
class GumbelSoftmaxGate(_GateBase):
    """Categorical gate: ``[..., C]`` features -> one of ``num_choices`` per token.

    Args:
        in_channels (int, optional): Feature channels ``C`` (needed when ``proj`` is ``None``).
        num_choices (int): Number of choices ``K`` (>= 2).
        tau (float): Gumbel-Softmax temperature (plain attribute, schedulable). Default 1.0.
        proj (nn.Module | dict, optional): Projection to logits ``[..., K]``; a config dict is
            built in the mmdyn scope. Default: ``nn.Linear(in_channels, num_choices)``.
        momentum (float, optional): EMA momentum ``m`` in [0, 1) for an averaged copy of the
            projection weights used in eval; ``None`` disables it. Default None.
        init_probs (Sequence[float], optional): Initial choice probabilities of the default
            projection (its bias is set to their log, weights to ``N(0, init_std)``), e.g.
            ``(0.95, 0.025, 0.025)`` to start with choice 0 almost always on as DGE does.
        init_std (float): Std of the default projection's initial weights. Default 0.01.
    """

    def __init__(self, in_channels: Optional[int] = None, num_choices: int = 2,
                 tau: float = 1.0, proj: Optional[Union[nn.Module, dict]] = None,
                 momentum: Optional[float] = None,
                 init_probs: Optional[Sequence[float]] = None, init_std: float = 0.01):
        if num_choices < 2:
            raise ValueError(f'num_choices must be >= 2, got {num_choices}')
        if init_probs is not None:
            if len(init_probs) != num_choices or min(init_probs) <= 0:
                raise ValueError(f'init_probs must be {num_choices} positive numbers, '
                                 f'got {init_probs}')
        self.num_choices = num_choices
        self.init_probs = None if init_probs is None else tuple(float(p) for p in init_probs)
        super().__init__(in_channels, num_choices, proj, tau, momentum, init_std)
        self.init_weights()

    def _init_bias(self) -> None:
        if self.init_probs is None:
            self.proj.bias.zero_()
        else:
            p = torch.tensor(self.init_probs, dtype=torch.float64)
            self.proj.bias.copy_((p / p.sum()).log().to(self.proj.bias.dtype))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``[..., K]`` of features ``[..., C]`` (checked: ``K`` of them)."""
        logits = self.project(x)
        if logits.shape[-1] != self.num_choices:
            raise ValueError(f'projection gives {logits.shape[-1]} logits, expected '
                             f'{self.num_choices}')
        return logits

    def forward(self, x: torch.Tensor, stochastic: Optional[bool] = None) -> GateOutput:
        """Decide per token.

        Args:
            x (Tensor): Features ``[..., C]``.
            stochastic (bool, optional): Sample with Gumbel noise (default: ``self.training``).

        Returns:
            GateOutput: ``decision`` one-hot ``[..., K]``, ``soft`` ``[..., K]``, ``logits``.
        """
        logits = self.logits(x)
        if self.training if stochastic is None else stochastic:
            return gumbel_softmax_st(logits, self.tau)
        return categorical_eval(logits)


@MODELS.register_module()
class GumbelSigmoidGate(_GateBase):
    """Binary gate: ``[..., C]`` features -> 0/1 per token.

    Args:
        in_channels (int, optional): Feature channels ``C`` (needed when ``proj`` is ``None``).
        tau (float): Gumbel-Sigmoid temperature (plain attribute, schedulable). Default 1.0.
        threshold (float): Eval rule ``sigmoid(logit) > threshold``, in (0, 1). Default 0.5.
        proj (nn.Module | dict, optional): Projection to one logit ``[..., 1]``; a config dict is
            built in the mmdyn scope. Default: ``nn.Linear(in_channels, 1)``.
        momentum (float, optional): EMA momentum, see :class:`GumbelSoftmaxGate`.
        init_prob (float, optional): Initial "on" probability of the default projection (bias
            ``logit(init_prob)``). Default None (bias 0, probability 0.5).
        init_std (float): Std of the default projection's initial weights. Default 0.01.
    """

    def __init__(self, in_channels: Optional[int] = None, tau: float = 1.0,
                 threshold: float = 0.5, proj: Optional[Union[nn.Module, dict]] = None,
                 momentum: Optional[float] = None, init_prob: Optional[float] = None,
                 init_std: float = 0.01):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        if init_prob is not None and not 0.0 < init_prob < 1.0:
            raise ValueError(f'init_prob must be in (0, 1), got {init_prob}')
        self.threshold = float(threshold)
        self.init_prob = init_prob
        super().__init__(in_channels, 1, proj, tau, momentum, init_std)
        self.init_weights()

    def _init_bias(self) -> None:
        p = 0.5 if self.init_prob is None else self.init_prob
        self.proj.bias.fill_(float(torch.logit(torch.tensor(p, dtype=torch.float64))))

    def forward(self, x: torch.Tensor, stochastic: Optional[bool] = None) -> GateOutput:
        """Decide per token.

        Args:
            x (Tensor): Features ``[..., C]``.
            stochastic (bool, optional): Sample with logistic noise (default: ``self.training``).

        Returns:
            GateOutput: ``decision``, ``soft`` and ``logits``, all ``[...]`` (last dim dropped).
        """
        logits = self.project(x)
        if logits.shape[-1] != 1:
            raise ValueError(f'projection must give one logit per token, got last dim '
                             f'{logits.shape[-1]}')
        logits = logits.squeeze(-1)
        if self.training if stochastic is None else stochastic:
            return gumbel_sigmoid_st(logits, self.tau)
        return binary_eval(logits, self.threshold)
