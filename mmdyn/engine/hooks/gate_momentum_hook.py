"""Keep the momentum (EMA) copies of the gates' weights up to date."""
from typing import List, Optional

import torch.nn as nn
from mmengine.hooks import Hook

from mmdyn.models.utils.dynamic import unwrap_model
from mmdyn.registry import HOOKS


def find_momentum_gates(model: nn.Module) -> List[nn.Module]:
    """Modules of ``model`` (wrappers unwrapped) with a ``momentum_update`` method and a
    ``momentum`` that is not None."""
    model = unwrap_model(model)
    return [m for m in model.modules()
            if callable(getattr(m, 'momentum_update', None))
            and getattr(m, 'momentum', None) is not None]


@HOOKS.register_module()
class GateMomentumHook(Hook):
    """Call ``momentum_update()`` on every gate with momentum after each training iteration.

    The gates are those of :func:`find_momentum_gates` (e.g. :class:`GumbelSoftmaxGate` or
    :class:`GumbelSigmoidGate` built with ``momentum``), looked up once per run. The EMA weights
    live in the gates' buffers, so they are saved and resumed with the model's checkpoint.

    Args:
        interval (int): Update every ``interval`` iterations. Default 1.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 1):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'GateMomentumHook: interval must be a positive int, got '
                             f'{interval!r}')
        self.interval = interval
        self._gates: Optional[List[nn.Module]] = None

    def before_train(self, runner) -> None:
        self._gates = find_momentum_gates(runner.model)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        if self._gates is None:
            self._gates = find_momentum_gates(runner.model)
        for gate in self._gates:
            gate.momentum_update()
