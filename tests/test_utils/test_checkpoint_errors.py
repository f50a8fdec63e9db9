"""One line for every unreadable checkpoint, ``friendly_errors`` and ``one_line`` (issue 19,
items 5, 7, 8, 13; issue 15, item 8)."""
import pytest
import torch

from mmdyn.models.utils.ckpt_convert import load_checkpoint_file
from mmdyn.utils.checkpoint import read_checkpoint
from mmdyn.utils.cli import ToolError, friendly_errors, one_line
from mmdyn.utils.errors import UnreadableCheckpoint, UserError


class Foreign:
    """A class that no checkpoint allow-list names."""


@pytest.fixture
def files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.arange(2000.)}, 'meta': {'iter': 3}}, good)
    data = good.read_bytes()
    out = dict(good=good)
    for name, content in (('half', data[:len(data) // 2]), ('tail', data[:-20]),
                          ('random', bytes(range(256)) * 4), ('empty', b'')):
        out[name] = tmp_path / f'{name}.pth'
        out[name].write_bytes(content)
    out['foreign'] = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'obj': Foreign()}, out['foreign'])
    out['tensor'] = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(2), out['tensor'])
    return out


def _message(path):
    with pytest.raises(UnreadableCheckpoint) as e:
        read_checkpoint(str(path))
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    text = str(e.value)
    assert '\n' not in text and 'weights_only' not in text
    return text


def test_read_checkpoint_says_why(files, tmp_path):
    assert read_checkpoint(str(files['good']))['meta'] == {'iter': 3}
    for name in ('half', 'tail'):
        assert _message(files[name]) == (f'not a readable checkpoint: {files[name]} '
                                         '(truncated or corrupt)')
    assert _message(files['random']) == (f'not a readable checkpoint: {files["random"]} '
                                         '(not a torch checkpoint: unrecognised bytes)')
    assert _message(files['empty']) == (f'not a readable checkpoint: {files["empty"]} '
                                        '(it ends early: empty or truncated)')
    missing = tmp_path / 'nope.pth'
    assert _message(missing) == f'not a readable checkpoint: {missing} (it does not exist)'
    assert _message(tmp_path) == f'not a readable checkpoint: {tmp_path} (it is a directory)'
    assert _message(files['tensor']) == (f'not a readable checkpoint: {files["tensor"]} (it '
                                         'holds a Tensor, not a dict of tensors)')
    foreign = _message(files['foreign'])
    assert foreign.startswith(f'not a readable checkpoint: {files["foreign"]} (it holds an '
                              f'object of class {__name__}.Foreign, which mmdyn does not '
                              'unpickle')


def test_pretrained_loading_has_no_unsafe_fallback(files):
    """``load_checkpoint_file`` (``init_cfg=Pretrained``, the converters) never unpickles a
    foreign class: it names the file and the class instead."""
    with pytest.raises(UnreadableCheckpoint, match=r'class \S+\.Foreign') as e:
        load_checkpoint_file(str(files['foreign']))
    assert str(files['foreign']) in str(e.value)
    assert load_checkpoint_file(str(files['good']))['meta'] == {'iter': 3}


def test_friendly_errors_one_line_and_debug(capsys, monkeypatch):
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    with pytest.raises(SystemExit) as e:
        with friendly_errors('tool.py'):
            raise ToolError('data root x is empty')
    assert e.value.code == 2
    assert capsys.readouterr().err == 'tool.py: error: data root x is empty\n'
    with pytest.raises(SystemExit) as e:
        with friendly_errors(None, code=1):
            raise UnreadableCheckpoint('not a readable checkpoint: a.pth (truncated or corrupt)')
    assert e.value.code == 1
    assert capsys.readouterr().err == 'error: not a readable checkpoint: a.pth (truncated or ' \
                                      'corrupt)\n'
    monkeypatch.setenv('MMDYN_DEBUG', '1')
    with pytest.raises(ToolError):
        with friendly_errors('tool.py'):
            raise ToolError('x')
    monkeypatch.delenv('MMDYN_DEBUG')
    with pytest.raises(RuntimeError):  # a real bug keeps its traceback
        with friendly_errors('tool.py'):
            raise RuntimeError('bug')


def test_one_line_for_errors_of_objects_built_from_a_config():
    # mmengine's build_from_cfg re-raises as ``class `X` in module: message``
    e = ValueError('class `DGEPVT` in mmdyn/models/backbones/dge.py: DGE: the budget gamma '
                   'must be in [0, 1], got 2')
    assert one_line(e) == 'DGEPVT: DGE: the budget gamma must be in [0, 1], got 2'
    nested = ValueError('class `EncoderDecoder` in mmseg/models/segmentors/encoder_decoder.py: '
                        'class `DGEPVT` in mmdyn/models/backbones/dge.py: DGE: bad')
    assert one_line(nested) == 'DGEPVT: DGE: bad'
    e = TypeError("DGEPVT.__init__() got an unexpected keyword argument 'budgett'")
    assert one_line(e) == "DGEPVT.__init__() got an unexpected keyword argument 'budgett'"
    assert one_line(ValueError('a plain bug')) is None
    assert one_line(KeyError('k')) is None
