"""Save the random-number state in checkpoints and restore it on resume.

mmengine's resume restores the weights, the optimizer, the schedulers and the message hub but
not the generators of Python's ``random``, numpy and torch (CPU and CUDA), so a resumed run draws
other random numbers (data augmentation, drop path, Gumbel noise) than the uninterrupted run
would have, and drifts from it. :class:`RandomStateHook` stores them in every checkpoint it sees
saved and, on resume, sets them back at the point where the uninterrupted run stood when it
saved: just before the next batch is fetched (after mmengine has skipped the batches already
trained, which draws random numbers of its own). A validation run during training leaves the
generators as it found them (its data loader draws a seed), so that one that fell between the
checkpoint and the next batch in the uninterrupted run does not make it differ from the resumed
one. In distributed training with ``randomness.diff_rank_seed`` (every rank its own
generators) the ranks' states are gathered after each training iteration (only rank 0 saves the
checkpoint) and each rank resumes from its own; without it the ranks' states are equal and rank
0's is saved.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook

from mmdyn.registry import HOOKS

_CKPT_KEY = 'mmdyn_random_state'


def get_random_state() -> dict:
    """The state of Python's, numpy's and torch's generators (CUDA's when present)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Restore what :func:`get_random_state` returned."""
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state['numpy']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda[0])


class _RestoreBeforeFetch:
    """Wraps a train loop's batch iterator: restores ``state`` before fetch number ``skip``
    (counting from 0), i.e. after the ``skip`` batches an iteration-based resume advances."""

    def __init__(self, it, skip: int, state: dict):
        self._it, self._skip, self._state = it, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._state is not None and self._skip == 0:
            set_random_state(self._state)
            self._state = None
        self._skip -= 1
        return next(self._it)

    def __getattr__(self, name):
        return getattr(self._it, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Put the random-number state into checkpoints and restore it when training resumes, so
    that an interrupted and resumed run equals an uninterrupted one. ``tools/train.py`` adds it
    to every training run (``custom_hooks``) unless the config has it already."""

    # before CheckpointHook (VERY_LOW): the ranks' states are gathered before it saves
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None
        self._rank_states: Optional[list] = None

    @staticmethod
    def _per_rank(runner) -> bool:
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        return get_world_size() > 1 and bool(randomness.get('diff_rank_seed', False))

    def _gather(self, runner) -> None:
        # a collective on every rank, where CheckpointHook may save next (rank 0 only)
        self._rank_states = all_gather_object(get_random_state()) \
            if self._per_rank(runner) else None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[_CKPT_KEY] = get_random_state() if self._rank_states is None else \
            dict(ranks=self._rank_states)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(_CKPT_KEY)
        # only when training resumes (not for load_from weights or a test run)
        if state is not None and getattr(runner, '_resume', False):
            if 'ranks' in state:  # this rank's own (another number of ranks: rank 0's)
                ranks = state['ranks']
                state = ranks[get_rank()] if len(ranks) == get_world_size() else ranks[0]
            self._pending = state  # restored where the uninterrupted run stood (below)

    def before_val(self, runner) -> None:
        self._before_val = get_random_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_random_state(self._before_val)
            self._before_val = None

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        it = getattr(loop, 'dataloader_iterator', None)
        if it is not None:  # iteration-based: mmengine first skips the trained batches
            loop.dataloader_iterator = _RestoreBeforeFetch(it, int(runner.iter), self._pending)
        else:  # epoch-based: resumed at an epoch boundary; the epoch's iterator is made next
            set_random_state(self._pending)
        self._pending = None
