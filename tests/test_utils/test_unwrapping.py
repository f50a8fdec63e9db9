"""The one checkpoint unwrapping (``unwrap_state_dict``) and the one model-wrapper unwrapping
(``unwrap_model``) that every loader, hook and tool of mmdyn goes through."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from mmdyn.models.utils import unwrap_model
from mmdyn.models.utils.ckpt_convert import backbone_state_dict
from mmdyn.utils.checkpoint import unwrap_state_dict

A, B = torch.zeros(2), torch.ones(3)


@pytest.mark.parametrize('wrap', [
    lambda sd: sd,
    lambda sd: {'state_dict': sd, 'meta': {'epoch': 3}},         # mmengine
    lambda sd: {'model_state_dict': sd, 'optimizer': {}},       # public DVT code
    lambda sd: {'model': sd, 'epoch': 1},                       # DeiT / timm
    lambda sd: {'module': sd},
])
def test_every_container_gives_the_same_tensors(wrap):
    sd = OrderedDict([('x.weight', A), ('y.bias', B)])
    out = unwrap_state_dict(wrap(sd))
    assert list(out) == ['x.weight', 'y.bias']
    assert out['x.weight'] is A and out['y.bias'] is B


def test_ddp_prefix_non_tensors_and_ema():
    ckpt = {'state_dict': {'module.a': A, 'module.b': B, 'module.step': 7},
            'state_dict_ema': {'a': B}}
    assert dict(unwrap_state_dict(ckpt)) == {'a': A, 'b': B}
    assert dict(unwrap_state_dict(ckpt, use_ema=True)) == {'a': B}
    # a prefix only on some keys is a real key name, not a DDP prefix
    mixed = unwrap_state_dict({'module.a': A, 'b': B})
    assert list(mixed) == ['module.a', 'b']


def test_prefix_keeps_only_its_keys():
    ckpt = {'state_dict': {'backbone.a': A, 'backbone.b.c': B, 'decode_head.w': A}}
    assert dict(unwrap_state_dict(ckpt, prefix='backbone')) == {'a': A, 'b.c': B}
    assert dict(unwrap_state_dict(ckpt, prefix='backbone.')) == {'a': A, 'b.c': B}
    with pytest.raises(KeyError, match="prefix 'neck.'"):
        unwrap_state_dict(ckpt, prefix='neck.')
    with pytest.raises(TypeError, match='no state dict found in a checkpoint of type list'):
        unwrap_state_dict([A])


def test_backbone_state_dict():
    whole = {'state_dict': {'backbone.a': A, 'head.w': B}}
    assert dict(backbone_state_dict(whole)) == {'a': A}
    bare = {'a': A, 'head.w': B}
    assert dict(backbone_state_dict(bare)) == bare
    vtpack = {'model': {'backbone.bottom_up.model.a': A, 'backbone.bottom_up.model.b': B}}
    assert dict(backbone_state_dict(vtpack)) == {'a': A, 'b': B}


def test_unwrap_model_every_wrapper():
    from mmengine.model import MMDistributedDataParallel
    inner = nn.Linear(2, 2)
    assert unwrap_model(inner) is inner
    assert unwrap_model(nn.DataParallel(nn.DataParallel(inner))) is inner
    # a wrapper instance built without a process group: only its class matters here
    ddp = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(ddp)
    ddp.module = inner
    assert unwrap_model(ddp) is inner

    class NotAWrapper(nn.Module):  # has a `.module` and a wrapper-like name, but is not one
        def __init__(self):
            super().__init__()
            self.module = inner
    NotAWrapper.__name__ = 'FakeDataParallel'
    fake = NotAWrapper()
    assert unwrap_model(fake) is fake


@pytest.mark.parametrize('wrap, rewrapped', [
    (lambda sd: {'state_dict': sd, 'meta': {'epoch': 3}}, False),  # mmengine: read as it is
    (lambda sd: sd, True),                                          # bare: no meta for mmseg
    (lambda sd: {'state_dict': sd}, True),
    (lambda sd: {'model_state_dict': sd, 'optimizer': {}}, True),
    (lambda sd: {'model': sd, 'epoch': 1}, True),                   # DeiT / timm
    (lambda sd: {'module': {'module.' + k: v for k, v in sd.items()}}, True),
])
def test_loadable_checkpoint_loads_the_weights(tmp_path, wrap, rewrapped):
    """mmengine's ``load_checkpoint`` finds no weights under ``model`` & co. (and mmseg's
    ``init_model`` needs ``meta``): the path given to it loads every weight of any container."""
    from mmengine.runner import load_checkpoint

    from mmdyn.utils.checkpoint import loadable_checkpoint, read_checkpoint
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = str(tmp_path / 'ckpt.pth')
    torch.save(wrap(src.state_dict()), path)
    out = loadable_checkpoint(path, read_checkpoint(path))
    assert (out != path) == rewrapped
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    ckpt = load_checkpoint(dst, out, map_location='cpu')
    assert isinstance(ckpt.get('meta'), dict)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # before: the 'model' container loaded nothing into the model
    if 'model' in wrap({}):
        fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        load_checkpoint(fresh, path, map_location='cpu')
        assert not torch.equal(fresh[0].weight, src[0].weight)


def test_loadable_checkpoint_into_a_work_dir(tmp_path):
    """With ``out_dir`` (a run's work dir) the rewrapped file is kept there under the source's
    name, so the config the run saves names a file that stays."""
    from mmdyn.utils.checkpoint import loadable_checkpoint, read_checkpoint
    m = nn.Linear(2, 3)
    path = str(tmp_path / 'deit.pth')
    torch.save({'model': m.state_dict()}, path)
    out = loadable_checkpoint(path, read_checkpoint(path), str(tmp_path / 'wd'))
    assert out == str(tmp_path / 'wd' / 'deit_mmengine.pth')
    ck = torch.load(out)
    assert torch.equal(ck['state_dict']['weight'], m.weight) and ck['meta'] == {}
    assert sorted(p.name for p in (tmp_path / 'wd').iterdir()) == ['deit_mmengine.pth']


@pytest.mark.parametrize('container', ['state_dict', 'model', 'model_state_dict', 'module',
                                       'bare'])
def test_load_checked_weights_any_container(tmp_path, container):
    """The in-process loader of get_flops / benchmark / visualize_dynamic / dit_skip_stats /
    dvt_thresholds: the weights of any container, every one (mmengine's loader found none
    under ``model`` & co.); another model's weights are one line."""
    from mmdyn.utils.cli import ToolError, load_checked_weights
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = src.state_dict()
    path = str(tmp_path / 'w.pth')
    torch.save(sd if container == 'bare' else {container: sd}, path)
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_checked_weights(dst, path)
    for k, v in sd.items():
        assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(ToolError, match='does not fit the model'):
        load_checked_weights(nn.Linear(3, 4), path)
