"""Losses on gate probabilities: L0 sparsity, batch-shaping (BaS) and generalized BaS (gBaS).

All run on the device without host round trips (no ``.item()``, numpy or scipy in forward): the
prior CDFs are torch expressions (relaxed Bernoulli, Normal) or a precomputed torch table (Beta).

Batch-shaping (Bejnordi et al., ICLR 2020) matches the empirical CDF of a set of gate
probabilities to a prior CDF ``F``. For one row of ``n`` samples sorted ascending,
``x_(1) <= ... <= x_(n)``::

    row_loss = 1/n * sum_i (i / (n + 1) - F(x_(i))) ** 2

and the loss is the mean of ``row_loss`` over rows. Sorting is differentiable w.r.t. the values,
so the gradient reaches every sample. With ``handle_ties=True`` tied samples share one
empirical CDF value, ``#{x <= x_(i)} / (n + 1)``, instead of consecutive ranks (both are valid
empirical CDFs; consecutive ranks push tied samples apart, which breaks a collapsed gate).
"""
import math
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.registry import MODELS
from mmdyn.models.utils.checks import NON_NEGATIVE, UNIT, check_loss_weight  # noqa: F401

#: clamp margin of the relaxed-Bernoulli CDF's input, ``x -> clamp(x, eps, 1 - eps)``: 1e-3 as the
#: authors' gBaS code (``batchshaping/cdf_relaxedbernoulli.py``, ``eps=1e-3``)
RB_CLAMP_EPS = 1e-3

# ----------------------------------------------------------------------------- prior CDFs


def _rb_cdf(x: torch.Tensor, prob_logit, temperature, eps: float) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.sigmoid(temperature * torch.logit(x) - prob_logit)


def relaxed_bernoulli_cdf(x: torch.Tensor, prob, temperature,
                          eps: float = RB_CLAMP_EPS) -> torch.Tensor:
    """CDF of the relaxed Bernoulli (binary Concrete) distribution.

    ``X = sigmoid((logit(prob) + L) / temperature)`` with standard logistic ``L``, so
    ``P(X <= x) = sigmoid(temperature * logit(x) - logit(prob))``. ``prob`` is
    ``P(X > 0.5)``, the probability that the hard gate is on; the smaller ``temperature``, the
    closer the samples are to 0 and 1. ``x`` is clamped to ``[eps, 1 - eps]`` (no infinite
    logit, zero gradient outside); ``eps`` = 1e-3 as the authors' gBaS code.

    Args:
        x (Tensor): Values in [0, 1].
        prob (float | Tensor): In (0, 1), broadcast against ``x``.
        temperature (float | Tensor): > 0, broadcast against ``x``.
        eps (float): Clamp margin. Default 1e-3 (:data:`RB_CLAMP_EPS`).
    """
    prob_logit = (math.log(prob / (1 - prob)) if isinstance(prob, float)
                  else torch.logit(prob))
    return _rb_cdf(x, prob_logit, temperature, eps)


def normal_cdf(x: torch.Tensor, mean, std) -> torch.Tensor:
    """CDF of ``N(mean, std^2)``: ``(1 + erf((x - mean) / (std * sqrt(2)))) / 2``."""
    return 0.5 * (1 + torch.erf((x - mean) / (std * math.sqrt(2.0))))


@torch.no_grad()
def beta_cdf(x: torch.Tensor, alpha: float, beta: float, num_iters: int = 300) -> torch.Tensor:
    """Regularised incomplete beta function ``I_x(alpha, beta)``, the Beta CDF (no gradient).

    Evaluated in float64 with the classical continued fraction of the incomplete beta function
    (modified Lentz recurrence, a fixed number of terms so there is no host sync), on ``x``
    below the mean-ish split point ``(alpha + 1) / (alpha + beta + 2)``, and through
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` above it, where the fraction converges fast.

    Args:
        x (Tensor): Values (clamped to [0, 1]).
        alpha (float): > 0.
        beta (float): > 0.
        num_iters (int): Continued-fraction terms (pairs).

    Returns:
        Tensor: ``I_x(alpha, beta)`` in ``x``'s dtype.
    """
    if not (alpha > 0 and beta > 0):
        raise ValueError(f'Beta parameters must be > 0, got alpha={alpha}, beta={beta}')
    xd = x.detach().to(torch.float64).clamp(0, 1)
    flip = xd > (alpha + 1) / (alpha + beta + 2)
    a = torch.where(flip, torch.full_like(xd, beta), torch.full_like(xd, alpha))
    b = torch.where(flip, torch.full_like(xd, alpha), torch.full_like(xd, beta))
    z = torch.where(flip, 1 - xd, xd)
    tiny = 1e-300

    def guard(v):
        return torch.where(v.abs() < tiny, torch.full_like(v, tiny), v)

    # continued fraction 1 / (1 + d1 / (1 + d2 / (1 + ...))) by modified Lentz
    c = torch.ones_like(z)
    d = 1 / guard(1 - (a + b) * z / (a + 1))
    h = d
    for m in range(1, num_iters + 1):
        m2 = 2 * m
        for coef in (m * (b - m) * z / ((a + m2 - 1) * (a + m2)),
                     -(a + m) * (a + b + m) * z / ((a + m2) * (a + m2 + 1))):
            d = 1 / guard(1 + coef * d)
            c = guard(1 + coef / c)
            h = h * d * c
    log_front = (torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
                 + a * torch.log(z.clamp_min(tiny)) + b * torch.log1p(-z).clamp_min(-1e300))
    val = torch.exp(log_front) * h / a
    val = torch.where(z <= 0, torch.zeros_like(val), val)
    val = torch.where(flip, 1 - val, val).clamp(0, 1)
    return val.to(x.dtype)


class BetaCDFTable(nn.Module):
    """Beta CDF on a fixed grid, linearly interpolated: differentiable and cheap.

    The grid ``x_k = sin^2(pi / 2 * k / K)`` is dense near 0 and 1, where Beta densities with a
    parameter < 1 are unbounded; the interpolation's slope (the gradient w.r.t. ``x``) is the
    average density over a cell, so it stays finite. The table is a non-persistent buffer that
    follows the module's device. Parameters are fixed at construction.

    Args:
        alpha (float): > 0.
        beta (float): > 0.
        num_points (int): Grid cells ``K``. Default 4096.
    """

    def __init__(self, alpha: float, beta: float, num_points: int = 4096):
        super().__init__()
        if not (alpha > 0 and beta > 0):
            raise ValueError(f'Beta parameters must be > 0, got alpha={alpha}, beta={beta}')
        self.alpha, self.beta = float(alpha), float(beta)
        grid = torch.sin(torch.linspace(0, 1, num_points + 1, dtype=torch.float64)
                         * (math.pi / 2)).pow(2)
        grid[0], grid[-1] = 0.0, 1.0
        self.register_buffer('grid', grid, persistent=False)
        self.register_buffer('values', beta_cdf(grid, alpha, beta), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        grid, values = self.grid.to(dtype), self.values.to(dtype)
        xc = x.to(dtype).clamp(0, 1)
        idx = torch.searchsorted(grid, xc.detach().contiguous()).clamp(1, grid.numel() - 1)
        x0, x1 = grid[idx - 1], grid[idx]
        v0, v1 = values[idx - 1], values[idx]
        w = (xc - x0) / (x1 - x0).clamp_min(torch.finfo(dtype).tiny)
        return (v0 + w * (v1 - v0)).to(x.dtype)


def build_prior_cdf(prior: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """A CDF callable from a prior config.

    Args:
        prior (dict): ``dict(type='Beta', alpha=, beta=)``,
            ``dict(type='RelaxedBernoulli', prob=, temperature=[, eps=1e-3])`` or
            ``dict(type='Normal', mean=, std=)``.

    Returns:
        Callable: ``x -> F(x)``; an ``nn.Module`` for ``'Beta'`` (so it follows the device).
    """
    prior = dict(prior)
    kind = prior.pop('type', None)
    if kind == 'Beta':
        return BetaCDFTable(**prior)
    if kind == 'RelaxedBernoulli':
        prob, temp = float(prior['prob']), float(prior['temperature'])
        eps = float(prior.get('eps', RB_CLAMP_EPS))
        if not 0 < prob < 1 or not temp > 0 or not 0 < eps < 0.5:
            raise ValueError(f'RelaxedBernoulli needs prob in (0, 1), temperature > 0 and eps '
                             f'in (0, 0.5), got {prior}')
        return partial(relaxed_bernoulli_cdf, prob=prob, temperature=temp, eps=eps)
    if kind == 'Normal':
        mean, std = float(prior['mean']), float(prior['std'])
        if not std > 0:
            raise ValueError(f'Normal needs std > 0, got {std}')
        return partial(normal_cdf, mean=mean, std=std)
    raise ValueError(f"prior type must be 'Beta', 'RelaxedBernoulli' or 'Normal', got {kind!r}")


# ----------------------------------------------------------------------------- BaS core


def batch_shaping_loss(samples: torch.Tensor,
                       cdf: Callable[[torch.Tensor], torch.Tensor],
                       valid_mask: Optional[torch.Tensor] = None,
                       handle_ties: bool = False) -> torch.Tensor:
    """Batch-shaping loss of rows of samples (see the module docstring).

    Args:
        samples (Tensor): ``[R, n]``, each row one empirical distribution.
        cdf (Callable): Maps the row-wise sorted samples ``[R, n]`` to prior CDF values
            ``[R, n]`` (a per-row prior broadcasts its parameters as ``[R, 1]``).
        valid_mask (Tensor, optional): ``Bool[R, n]``; invalid samples are left out (each row
            then has its own ``n``; rows without a valid sample are left out of the mean).
        handle_ties (bool): Tied samples share their empirical CDF value.

    Returns:
        Tensor: Scalar loss (0 when nothing is valid), in float32 or wider.
    """
    if samples.dim() != 2:
        raise ValueError(f'samples must be [R, n], got shape {tuple(samples.shape)}')
    samples = samples.to(torch.promote_types(samples.dtype, torch.float32))  # no fp16 CDFs
    r, n = samples.shape
    if valid_mask is None:
        counts = torch.full((r, 1), n, device=samples.device, dtype=samples.dtype)
        xs = samples.sort(dim=1).values
        pos_valid = None
    else:
        if valid_mask.shape != samples.shape:
            raise ValueError(f'valid_mask must be {tuple(samples.shape)}, '
                             f'got {tuple(valid_mask.shape)}')
        valid_mask = valid_mask.bool()
        counts = valid_mask.sum(1, keepdim=True).to(samples.dtype)
        xs = torch.where(valid_mask, samples, samples.new_full((), float('inf')))
        xs = xs.sort(dim=1).values  # invalid samples last
        pos_valid = torch.arange(n, device=samples.device) < counts
        xs = torch.where(pos_valid, xs, xs.new_full((), 0.5))  # finite placeholders
    if handle_ties:
        key = xs.detach()
        if pos_valid is not None:
            key = torch.where(pos_valid, key, key.new_full((), float('inf')))
        rank = torch.searchsorted(key.contiguous(), key.contiguous(), right=True)
        rank = rank.to(samples.dtype)
    else:
        rank = torch.arange(1, n + 1, device=samples.device, dtype=samples.dtype).expand(r, n)
    ecdf = rank / (counts + 1)
    sq = (ecdf - cdf(xs)).pow(2)
    if pos_valid is None:
        return (sq.sum(1) / n).mean()
    sq = torch.where(pos_valid, sq, sq.new_zeros(()))
    has = counts.squeeze(1) > 0
    row = sq.sum(1) / counts.squeeze(1).clamp_min(1)
    return (row * has).sum() / has.sum().clamp_min(1)


def _as_rows(probs: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` -> ``[B, P]``."""
    if probs.dim() < 2:
        raise ValueError(f'probs must be [B, ...] with at least one position dim, '
                         f'got shape {tuple(probs.shape)}')
    return probs.reshape(probs.shape[0], -1)


# ----------------------------------------------------------------------------- losses


@MODELS.register_module()
class L0SparsityLoss(nn.Module):
    """Penalise the mean gate probability of every image above a target (MSViT eq. 7).

    ``loss = loss_weight * mean_b h(mean_i m_{b,i} - target)`` with ``h = relu`` (``'hinge'``)
    or ``h = square`` (``'square'``). MSViT's eq. 7 prints ``min(0, .)``, which would reward
    spending more; we read it as the hinge ``max(0, .)`` (penalise only above the target), and
    ``target = 0`` gives the plain L0 penalty ``mean(m)``. Pass the probability of the costly
    choice (e.g. "fine scale" or "token kept").

    Args:
        target (float): Target ratio in [0, 1] (plain attribute, schedulable). Default 0.
        mode (str): ``'hinge'`` or ``'square'``. Default ``'hinge'``.
        loss_weight (float): Default 1.0.
        loss_name (str): Default ``'loss_l0'``.
    """

    value_ranges = dict(loss_weight=NON_NEGATIVE, target=UNIT)

    def __init__(self, target: float = 0.0, mode: str = 'hinge', loss_weight: float = 1.0,
                 loss_name: str = 'loss_l0'):
        super().__init__()
        if not 0.0 <= target <= 1.0:
            raise ValueError(f'target must be in [0, 1], got {target}')
        if mode not in ('hinge', 'square'):
            raise ValueError(f"mode must be 'hinge' or 'square', got {mode!r}")
        self.target = float(target)
        self.mode = mode
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', type(self).__name__)
        self._loss_name = loss_name

    def forward(self, probs: torch.Tensor,
                valid_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            probs (Tensor): ``[B, ...]`` gate probabilities.
            valid_mask (Tensor, optional): ``Bool`` of ``probs``' shape; invalid positions
                (e.g. padding) are left out of each image's mean.

        Returns:
            Tensor: Scalar loss.
        """
        p = _as_rows(probs)
        if valid_mask is None:
            mean = p.mean(1)
        else:
            if valid_mask.shape != probs.shape:
                raise ValueError(f'valid_mask must be {tuple(probs.shape)}, '
                                 f'got {tuple(valid_mask.shape)}')
            v = _as_rows(valid_mask).to(p.dtype)
            mean = (p * v).sum(1) / v.sum(1).clamp_min(1)
        diff = mean - self.target
        per_image = F.relu(diff) if self.mode == 'hinge' else diff.pow(2)
        return self.loss_weight * per_image.mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name


@MODELS.register_module()
class BatchShapingLoss(nn.Module):
    """Batch-shaping loss with one shared prior.

    Args:
        prior (dict): Prior config for :func:`build_prior_cdf`. Default ``Beta(0.6, 0.4)``
            (mean 0.6, U-shaped: it asks for gates that are mostly near 0 or 1, on for about
            60 % of the samples).
        per_position (bool): False (default): all probabilities of the batch form one
            distribution (MSViT eq. 8, "BaS on the flattened distribution"). True: every
            position is its own distribution over the batch (the original per-gate BaS), all
            with the same prior.
        handle_ties (bool): See :func:`batch_shaping_loss`. Default False.
        loss_weight (float): Default 1.0.
        loss_name (str): Default ``'loss_bas'``.
    """

    value_ranges = dict(loss_weight=NON_NEGATIVE)

    def __init__(self, prior: dict = dict(type='Beta', alpha=0.6, beta=0.4),
                 per_position: bool = False, handle_ties: bool = False,
                 loss_weight: float = 1.0, loss_name: str = 'loss_bas'):
        super().__init__()
        self.prior_cfg = dict(prior)
        self.prior_cdf = build_prior_cdf(prior)
        self.per_position = per_position
        self.handle_ties = handle_ties
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', type(self).__name__)
        self._loss_name = loss_name

    def forward(self, probs: torch.Tensor,
                valid_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            probs (Tensor): ``[B, ...]`` gate probabilities in [0, 1].
            valid_mask (Tensor, optional): ``Bool`` of ``probs``' shape, False at padding.

        Returns:
            Tensor: Scalar loss.
        """
        if valid_mask is not None and valid_mask.shape != probs.shape:
            raise ValueError(f'valid_mask must be {tuple(probs.shape)}, '
                             f'got {tuple(valid_mask.shape)}')
        p = _as_rows(probs)
        v = None if valid_mask is None else _as_rows(valid_mask)
        if self.per_position:
            p, v = p.t(), None if v is None else v.t()
        else:
            p, v = p.reshape(1, -1), None if v is None else v.reshape(1, -1)
        return self.loss_weight * batch_shaping_loss(p, self.prior_cdf, v, self.handle_ties)

    @property
    def loss_name(self) -> str:
        return self._loss_name


@MODELS.register_module()
class GeneralizedBatchShapingLoss(nn.Module):
    """Generalized batch-shaping (gBaS, MSViT eq. 9) with learned per-position priors.

    Every position ``i`` of the gate map has its own relaxed-Bernoulli prior
    ``RB(p_i, temperature)`` with ``p_i = sigmoid(theta_i)`` and learnable ``theta``; the
    probabilities of position ``i`` across the batch are batch-shaped to it. The learned
    ``p_i`` themselves are batch-shaped to a Gaussian hyperprior ``N(target, std^2)``, so
    their spread around the target ratio is controlled (std -> 0 gives plain per-position
    BaS with one prior; a large std lets positions be always on or off)::

        loss = loss_weight * (mean_i BaS({m_{b,i}}_b; RB(p_i, T))
                              + BaS({p_i}_i; N(target, std^2))
                              [+ temperature_reg * mean_i T_i])

    Choices, where the paper leaves room:

    * Positions are averaged (the paper writes a sum over positions; the mean keeps the two
      terms on one scale whatever the grid size, as the public gBaS code does).
    * ``hyperprior_std`` is the hyperprior's **standard deviation**: the authors' gBaS code
      (``batchshaping/cdf_normal.py``) divides by ``sqrt(2) * std`` although its docstring
      calls the argument "variance", and the paper's 0.1 ("hyperprior variance", appendix C.3)
      is that argument. The paper's literal reading (variance 0.1) is
      ``hyperprior_std=0.1 ** 0.5``. (``hyperprior_variance`` is no longer accepted.)
    * The relaxed-Bernoulli CDF clamps the gate values to ``[clamp_eps, 1 - clamp_eps]``,
      1e-3 as the authors' code (gradients of saturated gates are zero beyond it).
    * The priors live on a ``prior_shape`` grid. A gate map of another size (dense prediction
      inputs vary) uses the logits ``theta`` resized bilinearly to its grid; the hyperprior
      term always uses the learned grid itself.
    * ``temperature`` is fixed (0.3, appendix C.3) unless ``learn_temperature``: then
      ``T_i = sigmoid(phi_i)`` per position, initialised at ``temperature`` and kept small by
      an L1 term (the public gBaS notebook's recipe).
    * ``center_init`` (paper's "ctr init", inverse normalised distance to the centre): with
      ``d_i`` the distance of position ``i``'s centre to the image centre over the largest
      such distance, ``p_i = Q(1 - d_i)`` with ``Q`` the hyperprior's quantile function
      (arguments clipped to [0.01, 0.99], result to [0.01, 0.99]): central positions start
      likely on, the initial priors already follow the hyperprior. Without it every
      ``p_i = target``.

    The ``theta`` (and ``phi``) parameters belong to the model, so the optimizer trains them;
    consider ``paramwise_cfg=dict(custom_keys={'prior_logits': dict(decay_mult=0.)})``.

    Args:
        prior_shape (Sequence[int]): ``(h, w)`` grid of learned priors (the training gate grid).
        target (float): Target ratio in (0, 1), the hyperprior mean (plain attribute).
        temperature (float): Relaxed-Bernoulli temperature (> 0). Default 0.3.
        hyperprior_std (float): Standard deviation of the Gaussian hyperprior (> 0).
            Default 0.1.
        clamp_eps (float): Clamp margin of the relaxed-Bernoulli CDF. Default 1e-3.
        center_init (bool): Centre initialisation of the priors. Default False.
        learn_temperature (bool): Learn per-position temperatures. Default False.
        temperature_reg (float): Weight of their L1 term. Default 0.1.
        handle_ties (bool): See :func:`batch_shaping_loss`. Default False.
        loss_weight (float): ``lambda``. Default 1.0.
        loss_name (str): Default ``'loss_gbas'``.
    """

    value_ranges = dict(loss_weight=NON_NEGATIVE, target=(0.0, 1.0, True, True))

    def __init__(self, prior_shape: Sequence[int], target: float = 0.5,
                 temperature: float = 0.3, hyperprior_std: float = 0.1,
                 center_init: bool = False, learn_temperature: bool = False,
                 temperature_reg: float = 0.1, handle_ties: bool = False,
                 loss_weight: float = 1.0, loss_name: str = 'loss_gbas',
                 clamp_eps: float = RB_CLAMP_EPS,
                 hyperprior_variance: Optional[float] = None):
        super().__init__()
        if hyperprior_variance is not None:
            raise TypeError(
                'GeneralizedBatchShapingLoss: hyperprior_variance was renamed hyperprior_std and '
                "is a standard deviation (the authors' gBaS Normal prior takes a std and the "
                "paper's 0.1 is that std): pass hyperprior_std=0.1 for the paper's setting, or "
                f'hyperprior_std=sqrt(v) for a variance v (got hyperprior_variance='
                f'{hyperprior_variance})')
        if len(prior_shape) != 2 or min(prior_shape) < 1:
            raise ValueError(f'prior_shape must be (h, w) with h, w >= 1, got {prior_shape}')
        if not 0.0 < target < 1.0:
            raise ValueError(f'target must be in (0, 1), got {target}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if learn_temperature and not temperature < 1:
            raise ValueError(f'a learned temperature lies in (0, 1), got {temperature}')
        if not hyperprior_std > 0:
            raise ValueError(f'hyperprior_std must be > 0, got {hyperprior_std}')
        if not 0 < clamp_eps < 0.5:
            raise ValueError(f'clamp_eps must be in (0, 0.5), got {clamp_eps}')
        self.prior_shape: Tuple[int, int] = (int(prior_shape[0]), int(prior_shape[1]))
        self.target = float(target)
        self.temperature = float(temperature)
        self.hyperprior_std = float(hyperprior_std)
        self.clamp_eps = float(clamp_eps)
        self.learn_temperature = learn_temperature
        self.temperature_reg = check_loss_weight(temperature_reg, 'temperature_reg',
                                                 type(self).__name__)
        self.handle_ties = handle_ties
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', type(self).__name__)
        self._loss_name = loss_name
        self.prior_logits = nn.Parameter(self._initial_logits(center_init))
        if learn_temperature:
            self.temperature_logits = nn.Parameter(
                torch.full(self.prior_shape, math.log(temperature / (1 - temperature))))
        else:
            self.temperature_logits = None

    def _initial_logits(self, center_init: bool) -> torch.Tensor:
        h, w = self.prior_shape
        if not center_init:
            return torch.full((h, w), math.log(self.target / (1 - self.target)))
        ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h - 0.5
        xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w - 0.5
        dist = (ys[:, None].pow(2) + xs[None, :].pow(2)).sqrt()
        dist = dist / dist.max().clamp_min(1e-12)
        u = (1 - dist).clamp(0.01, 0.99)
        std = self.hyperprior_std
        p = (self.target + std * math.sqrt(2.0) * torch.erfinv(2 * u - 1)).clamp(0.01, 0.99)
        return torch.logit(p).float()

    def priors(self, hw_shape: Optional[Sequence[int]] = None):
        """Prior logits and temperatures on ``hw_shape`` (default: the learned grid).

        Returns:
            tuple[Tensor, Tensor | float]: ``theta`` ``[h, w]`` and the temperatures
            (``[h, w]`` tensor when learned, else the float).
        """
        theta = self.prior_logits
        temp = self.temperature if self.temperature_logits is None else \
            torch.sigmoid(self.temperature_logits)
        if hw_shape is not None and tuple(hw_shape) != self.prior_shape:
            size = (int(hw_shape[0]), int(hw_shape[1]))
            theta = F.interpolate(theta[None, None], size=size, mode='bilinear',
                                  align_corners=False)[0, 0]
            if torch.is_tensor(temp):
                temp = F.interpolate(temp[None, None], size=size, mode='bilinear',
                                     align_corners=False)[0, 0]
        return theta, temp

    def forward(self, probs: torch.Tensor, hw_shape: Optional[Sequence[int]] = None,
                valid_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            probs (Tensor): Gate probabilities ``[B, H, W]``, or ``[B, N]`` with ``hw_shape``.
            hw_shape (Sequence[int], optional): ``(H, W)`` for ``[B, N]`` input.
            valid_mask (Tensor, optional): ``Bool`` of ``probs``' shape, False at padding.

        Returns:
            Tensor: Scalar loss.
        """
        if probs.dim() == 2:
            if hw_shape is None or probs.shape[1] != hw_shape[0] * hw_shape[1]:
                raise ValueError(f'[B, N] probs need hw_shape with H * W = N, got shape '
                                 f'{tuple(probs.shape)} and hw_shape {hw_shape}')
            hw = (int(hw_shape[0]), int(hw_shape[1]))
        elif probs.dim() == 3:
            hw = tuple(probs.shape[1:])
        else:
            raise ValueError(f'probs must be [B, H, W] or [B, N], got shape '
                             f'{tuple(probs.shape)}')
        if valid_mask is not None and valid_mask.shape != probs.shape:
            raise ValueError(f'valid_mask must be {tuple(probs.shape)}, '
                             f'got {tuple(valid_mask.shape)}')
        theta, temp = self.priors(hw)
        theta = theta.reshape(-1, 1).to(probs.dtype)
        if torch.is_tensor(temp):
            temp = temp.reshape(-1, 1).to(probs.dtype)
        rows = probs.reshape(probs.shape[0], -1).t()  # [P, B]: each position over the batch
        valid = None if valid_mask is None else valid_mask.reshape(probs.shape[0], -1).t()
        loss = batch_shaping_loss(rows, lambda x: _rb_cdf(x, theta, temp, self.clamp_eps), valid,
                                  self.handle_ties)
        means = torch.sigmoid(self.prior_logits).reshape(1, -1)
        std = self.hyperprior_std
        loss = loss + batch_shaping_loss(means, lambda x: normal_cdf(x, self.target, std),
                                         handle_ties=self.handle_ties)
        if self.temperature_logits is not None:
            loss = loss + self.temperature_reg * torch.sigmoid(self.temperature_logits).mean()
        return self.loss_weight * loss

    @property
    def loss_name(self) -> str:
        return self._loss_name
