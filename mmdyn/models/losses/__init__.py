from .budget_loss import BudgetLoss
from .distill_loss import PixelKLDistillLoss
from .gate_losses import BatchShapingLoss, GeneralizedBatchShapingLoss, L0SparsityLoss
from .gate_losses import (batch_shaping_loss, beta_cdf, normal_cdf,  # noqa: F401
                          relaxed_bernoulli_cdf)

__all__ = [
    'BudgetLoss', 'PixelKLDistillLoss', 'BatchShapingLoss', 'GeneralizedBatchShapingLoss',
    'L0SparsityLoss'
]
