"""Budget (complexity) loss."""
from typing import Optional

import torch
import torch.nn as nn

from mmdyn.registry import MODELS
from mmdyn.models.utils.checks import NON_NEGATIVE, UNIT, check_loss_weight  # noqa: F401


@MODELS.register_module()
class BudgetLoss(nn.Module):
    """``loss_weight * mean_b (cost_ratio_b - target) ** 2``.

    The squared distance of the realised (or expected, differentiable) cost ratio to a target
    ratio, as DiT (``(C_space / C_base - mu) ** 2``) and DGE use it. Pass one ratio per image to
    penalise each image, or one scalar (e.g. DGE's ratio of batch means) to penalise the batch.

    Args:
        target (float): Target cost ratio (>= 0), a plain attribute a schedule hook can move.
        loss_weight (float): ``lambda``. Default 1.0.
        loss_name (str): Name in the loss dict (mmseg style). Default ``'loss_budget'``.
    """

    value_ranges = dict(loss_weight=NON_NEGATIVE, target=NON_NEGATIVE)

    def __init__(self, target: float = 0.5, loss_weight: float = 1.0,
                 loss_name: str = 'loss_budget'):
        super().__init__()
        if target < 0:
            raise ValueError(f'target must be >= 0, got {target}')
        self.target = float(target)
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', type(self).__name__)
        self._loss_name = loss_name

    def forward(self, cost_ratio: torch.Tensor, target: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            cost_ratio (Tensor): Scalar or ``[B]`` cost ratios.
            target (float, optional): Overrides ``self.target`` for this call.

        Returns:
            Tensor: Scalar loss.
        """
        if not torch.is_tensor(cost_ratio) or cost_ratio.dim() > 1 or cost_ratio.numel() == 0:
            raise ValueError('cost_ratio must be a scalar or a non-empty [B] tensor, got '
                             f'{getattr(cost_ratio, "shape", type(cost_ratio))}')
        target = self.target if target is None else target
        return self.loss_weight * (cost_ratio - target).pow(2).mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name
