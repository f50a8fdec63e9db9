"""Shared pieces of mmdyn's command-line tools: loading configs and one-line errors.

Bad input (a missing config or data root, an unknown ``type``, a config that needs a codebase that
is not installed, an unreadable checkpoint) ends the tools with one line naming the problem
instead of a traceback. Set ``MMDYN_DEBUG=1`` to get the traceback too.
"""
import contextlib
import importlib.util
import os
import os.path as osp
import re
import sys
from typing import Iterator, Optional, Tuple

#: The codebases a config's ``default_scope`` can name, and the pip package of each.
CODEBASES = {
    'mmdet': 'mmdet',
    'mmseg': 'mmsegmentation',
    'mmpretrain': 'mmpretrain',
    'mmengine': 'mmengine',
    'mmdyn': 'mmdyn',
}
_PKG_PREFIX = re.compile(r'^(mmdet|mmseg|mmpretrain)::')


class ToolError(Exception):
    """A problem with the user's input, reported as one line."""


def _module_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _missing_codebase_message(scope: str, what: str) -> str:
    return (f'{what} needs {scope} ({CODEBASES.get(scope, scope)}), which is not installed; '
            f'install it (see README, "Install")')


def check_config_codebases(path: str) -> None:
    """Fail early if the config inherits from, or runs in the scope of, a missing codebase."""
    with open(path) as f:
        text = f.read()
    for scope in sorted(set(re.findall(r"['\"](mmdet|mmseg|mmpretrain)::", text))):
        if not _module_installed(scope):
            raise ToolError(_missing_codebase_message(scope, f'config {path}'))


def load_config(path: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile`` with one-line errors; checks the config's codebase is installed."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ToolError(f'config file {path!r} does not exist')
    check_config_codebases(path)
    try:
        cfg = Config.fromfile(path)
    except ImportError as e:
        raise ToolError(f'config {path}: {e} (is the package in custom_imports installed?)')
    except (FileNotFoundError, SyntaxError, KeyError, TypeError) as e:
        raise ToolError(f'config {path} could not be read: {type(e).__name__}: {e}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmengine')
    if scope not in CODEBASES:
        raise ToolError(f'config {path}: unknown default_scope {scope!r}; expected one of '
                        f'{", ".join(CODEBASES)}')
    if not _module_installed(scope):
        raise ToolError(_missing_codebase_message(scope, f'config {path} (default_scope)'))
    return cfg


def _dataset_roots(ds_cfg) -> Iterator[Tuple[str, str]]:
    """(kind, path) pairs a dataset config reads from: its data root, or its annotation file."""
    if not isinstance(ds_cfg, dict):
        return
    for key in ('dataset', 'datasets'):  # wrappers: RepeatDataset, ConcatDataset, ...
        inner = ds_cfg.get(key)
        for sub in (inner if isinstance(inner, (list, tuple)) else [inner]):
            yield from _dataset_roots(sub)
    root = ds_cfg.get('data_root')
    if root:
        yield 'data root', root
    ann = ds_cfg.get('ann_file')
    if ann and not root and not osp.isabs(ann):
        yield 'annotation file', ann


def check_data_roots(cfg, splits=('train', 'val', 'test')) -> None:
    """Raise :class:`ToolError` naming the first data root of ``splits`` that does not exist."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for kind, path in _dataset_roots(loader.get('dataset')):
            if _PKG_PREFIX.match(str(path)):
                continue
            if not osp.exists(path):
                raise ToolError(
                    f'{kind} {path!r} of {split}_dataloader does not exist (generate a data set '
                    f'with tools/dataset_converters/make_toy_dataset.py, or set '
                    f'--cfg-options {split}_dataloader.dataset.data_root=DIR)')


def check_checkpoint(path: str) -> None:
    """Raise :class:`ToolError` unless ``path`` is a checkpoint that torch can read."""
    import torch
    if path.startswith(('http://', 'https://', 's3://', 'open-mmlab://', 'torchvision://')):
        return
    if not osp.isfile(path):
        raise ToolError(f'checkpoint {path!r} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ToolError(f'checkpoint {path!r} is not readable: {first}')
    if not isinstance(ckpt, dict):
        raise ToolError(f'checkpoint {path!r} holds a {type(ckpt).__name__}, not a state dict')


_REGISTRY_MISS = re.compile(r"(\S+) is not in the (\S+) registry")


def one_line(exc: BaseException) -> Optional[str]:
    """The one-line message for a known kind of failure, or None for a real bug."""
    if isinstance(exc, ToolError):
        return str(exc)
    text = str(exc.args[0]) if exc.args else str(exc)
    m = _REGISTRY_MISS.search(text)
    if isinstance(exc, KeyError) and m:
        return (f'unknown type {m.group(1)!r}: it is not in the {m.group(2)} registry (check '
                f'the spelling; mmdyn modules need the prefix, e.g. type=\'mmdyn.DiT\', and '
                f"custom_imports=dict(imports=['mmdyn']))")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split('.')[0]
        if top in CODEBASES:
            return _missing_codebase_message(top, 'this config')
    return None


@contextlib.contextmanager
def friendly_errors(prog: str):
    """Turn known input errors raised in the block into ``prog: error: <one line>``, exit 2."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        msg = one_line(e)
        if msg is None or os.environ.get('MMDYN_DEBUG'):
            raise
        print(f'{prog}: error: {msg}', file=sys.stderr)
        sys.exit(2)
