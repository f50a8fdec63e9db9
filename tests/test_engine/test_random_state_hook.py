"""Resume restores the random-number state (issue 19, item 19): a tiny run interrupted and
resumed equals the uninterrupted one, weight for weight."""
import importlib.util
import os.path as osp
import random

import numpy as np
import pytest
import torch

from mmdyn.engine.hooks.random_state_hook import get_random_state, set_random_state

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(REPO, 'configs', '_tiny_', 'dge-deit-tiny_toy-imagenet.py')


def _train_tool():
    spec = importlib.util.spec_from_file_location('_mmdyn_train_rng',
                                                  osp.join(REPO, 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_get_and_set_random_state():
    state = get_random_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_random_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_validation_leaves_the_generators_as_it_found_them():
    from mmdyn.engine.hooks.random_state_hook import RandomStateHook
    hook = RandomStateHook()
    state = get_random_state()
    hook.before_val(None)
    torch.rand(3), np.random.rand(), random.random()  # what a validation may draw
    hook.after_val(None)
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_random_state(state)
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def _weights(path):
    return torch.load(path, map_location='cpu')['state_dict']


@pytest.mark.parametrize('val_interval', [1000, 2])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, toy_imagenet, val_interval):
    """Also with a validation between the checkpoint and the next batch (``val_interval`` =
    the checkpoint interval): it leaves the generators as it found them."""
    tool = _train_tool()
    opts = [f'{s}_dataloader.dataset.data_root={toy_imagenet}' for s in ('train', 'val')]
    opts += [f'train_cfg.val_interval={val_interval}', 'default_hooks.checkpoint.interval=2',
             'default_hooks.checkpoint.max_keep_ckpts=3']
    full = tmp_path / 'full'
    tool.main([CFG, '--work-dir', str(full), '--cfg-options', 'train_cfg.max_iters=4', *opts])
    ckpt2 = torch.load(full / 'iter_2.pth', map_location='cpu')
    assert 'mmdyn_random_state' in ckpt2
    resumed = tmp_path / 'resumed'
    tool.main([CFG, '--work-dir', str(resumed), '--resume', str(full / 'iter_2.pth'),
               '--cfg-options', 'train_cfg.max_iters=4', *opts])
    a, b = _weights(full / 'iter_4.pth'), _weights(resumed / 'iter_4.pth')
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the test can fail: without the saved state the resumed run draws other numbers
    del ckpt2['mmdyn_random_state']
    torch.save(ckpt2, tmp_path / 'no_state.pth')
    drift = tmp_path / 'drift'
    tool.main([CFG, '--work-dir', str(drift), '--resume', str(tmp_path / 'no_state.pth'),
               '--cfg-options', 'train_cfg.max_iters=4', *opts])
    c = _weights(drift / 'iter_4.pth')
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_each_rank_resumes_from_its_own_state(monkeypatch):
    """With ``randomness.diff_rank_seed`` the ranks' generators differ: their states are
    gathered after every training iteration (a collective; only rank 0 saves) and each rank
    restores its own. Checked with two simulated ranks (a two-process resume was checked by
    hand: 0 of 40 weights differ after it, 40 of 40 before)."""
    import types

    import mmdyn.engine.hooks.random_state_hook as rs
    states = []
    for seed in (1, 2):  # what ranks 0 and 1 hold
        torch.manual_seed(seed)
        states.append(get_random_state())
    monkeypatch.setattr(rs, 'get_world_size', lambda: 2)
    monkeypatch.setattr(rs, 'all_gather_object', lambda obj: states)
    runner = types.SimpleNamespace(_randomness_cfg=dict(seed=0, diff_rank_seed=True),
                                   _resume=True)
    hook = rs.RandomStateHook()
    hook.after_train_iter(runner, 0)
    ckpt = {}
    hook.before_save_checkpoint(runner, ckpt)
    assert len(ckpt['mmdyn_random_state']['ranks']) == 2
    for rank in (0, 1):
        monkeypatch.setattr(rs, 'get_rank', lambda: rank)
        hook = rs.RandomStateHook()
        hook.after_load_checkpoint(runner, ckpt)
        assert torch.equal(hook._pending['torch'], states[rank]['torch'])
    assert not torch.equal(states[0]['torch'], states[1]['torch'])
    # one state for all without diff_rank_seed (no collective); a plain state as before
    runner._randomness_cfg = dict(seed=0)
    monkeypatch.setattr(rs, 'all_gather_object', None)
    hook = rs.RandomStateHook()
    hook.after_train_iter(runner, 0)
    ckpt = {}
    hook.before_save_checkpoint(runner, ckpt)
    assert 'ranks' not in ckpt['mmdyn_random_state']
    hook.after_load_checkpoint(runner, ckpt)
    assert hook._pending is ckpt['mmdyn_random_state']
