"""Pixel-wise KL distillation (DoViT self-distillation)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyn.registry import MODELS
from mmdyn.models.utils.checks import NON_NEGATIVE, UNIT, check_loss_weight  # noqa: F401


@MODELS.register_module()
class PixelKLDistillLoss(nn.Module):
    """``loss_weight * T^2 * mean_valid_pixels KL(softmax(t / T) || softmax(s / T))``.

    The KL divergence from the teacher's to the student's class distribution at every pixel,
    summed over classes, averaged over the valid pixels of the batch (pixels are weighted
    equally across images). The teacher is detached. With no valid pixel the loss is 0.

    Args:
        temperature (float): ``T`` (> 0). Default 1.0.
        loss_weight (float): Default 1.0.
        loss_name (str): Default ``'loss_distill'``.
    """

    value_ranges = dict(loss_weight=NON_NEGATIVE)

    def __init__(self, temperature: float = 1.0, loss_weight: float = 1.0,
                 loss_name: str = 'loss_distill'):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = float(temperature)
        self.loss_weight = check_loss_weight(loss_weight, 'loss_weight', type(self).__name__)
        self._loss_name = loss_name

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                valid_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            student (Tensor): Logits ``[B, K, ...]`` (e.g. ``[B, K, H, W]``), classes on dim 1.
            teacher (Tensor): Logits of the same shape (detached here).
            valid_mask (Tensor, optional): ``Bool[B, ...]`` (e.g. ``[B, H, W]``), False at
                ignored pixels (e.g. ``label == ignore_index``). None: all valid.

        Returns:
            Tensor: Scalar loss.
        """
        if student.shape != teacher.shape or student.dim() < 2:
            raise ValueError(f'student {tuple(student.shape)} and teacher '
                             f'{tuple(teacher.shape)} must be equal [B, K, ...] shapes')
        t = self.temperature
        log_s = F.log_softmax(student / t, dim=1)
        log_t = F.log_softmax(teacher.detach().to(log_s.dtype) / t, dim=1)
        kl = F.kl_div(log_s, log_t, reduction='none', log_target=True).sum(1)  # [B, ...]
        if valid_mask is None:
            loss = kl.mean()
        else:
            if valid_mask.shape != kl.shape:
                raise ValueError(f'valid_mask must be {tuple(kl.shape)}, '
                                 f'got {tuple(valid_mask.shape)}')
            valid_mask = valid_mask.bool()
            loss = torch.where(valid_mask, kl, kl.new_zeros(())).sum() / \
                valid_mask.sum().clamp_min(1)
        return self.loss_weight * t * t * loss

    @property
    def loss_name(self) -> str:
        return self._loss_name
