"""Gradient scaling: the identity in the forward, the gradient multiplied by ``s`` backward."""
import torch

__all__ = ['scale_grad']


class _ScaleGrad(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged (the same values), its gradient multiplied by ``scale`` in the backward.

    ``scale == 1`` or a tensor that needs no gradient returns ``x`` itself.
    """
    if scale == 1.0 or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, float(scale))
