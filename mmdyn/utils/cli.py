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
from typing import Iterator, Optional, Sequence, Tuple

#: The codebases a config's ``default_scope`` can name, and the pip package of each.
CODEBASES = {
    'mmdet': 'mmdet',
    'mmseg': 'mmsegmentation',
    'mmpretrain': 'mmpretrain',
    'mmengine': 'mmengine',
    'mmdyn': 'mmdyn',
}
_PKG_PREFIX = re.compile(r'^(mmdet|mmseg|mmpretrain)::')


from .errors import UserError


class ToolError(UserError):
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
    """(kind, path) pairs a dataset config reads from: its data root (first), its annotation
    file and its data prefixes (folders), joined with the root as mmengine joins them."""
    if not isinstance(ds_cfg, dict):
        return
    for key in ('dataset', 'datasets'):  # wrappers: RepeatDataset, ConcatDataset, ...
        inner = ds_cfg.get(key)
        for sub in (inner if isinstance(inner, (list, tuple)) else [inner]):
            yield from _dataset_roots(sub)
    root = ds_cfg.get('data_root') or ''
    if root:
        yield 'data root', root
    ann = ds_cfg.get('ann_file')
    if isinstance(ann, str) and ann:
        yield 'annotation file', ann if osp.isabs(ann) else osp.join(root, ann)
    prefix = ds_cfg.get('data_prefix')
    if isinstance(prefix, dict):
        for name, sub in prefix.items():
            if isinstance(sub, str) and sub and name in ('img', 'img_path', 'seg_map_path',
                                                        'seg'):
                yield f'image folder ({name})', sub if osp.isabs(sub) else osp.join(root, sub)


def _evaluator_files(ev) -> Iterator[str]:
    for e in (ev if isinstance(ev, (list, tuple)) else [ev]):
        if isinstance(e, dict) and isinstance(e.get('ann_file'), str) and e['ann_file']:
            yield e['ann_file']


def check_data_roots(cfg, splits=('train', 'val', 'test')) -> None:
    """Raise :class:`ToolError` naming the first data root, annotation file or image folder of
    ``splits`` that does not exist, or a data root that is empty."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        hint = (f'(generate a data set with tools/dataset_converters/make_toy_dataset.py, or '
                f'set --cfg-options {split}_dataloader.dataset.data_root=DIR)')
        for kind, path in _dataset_roots(loader.get('dataset')):
            if _PKG_PREFIX.match(str(path)):
                continue
            if not osp.exists(path):
                raise ToolError(f'{kind} {path!r} of {split}_dataloader does not exist {hint}')
            if kind == 'data root' and osp.isdir(path) and not os.listdir(path):
                raise ToolError(f'data root {path!r} of {split}_dataloader is empty {hint}')
        if split in ('val', 'test'):
            for path in _evaluator_files(cfg.get(f'{split}_evaluator')):
                if not _PKG_PREFIX.match(path) and not osp.isfile(path):
                    raise ToolError(f'annotation file {path!r} of {split}_evaluator does not '
                                    f'exist (set --cfg-options {split}_evaluator.ann_file=FILE)')


def check_checkpoint(path: str) -> dict:
    """The checkpoint at ``path`` (``{}`` for a remote one, read later by mmengine); raises
    ``not a readable checkpoint: FILE (why)`` unless torch can read it safely."""
    from .checkpoint import _REMOTE, read_checkpoint
    if str(path).startswith(_REMOTE):
        return {}
    return read_checkpoint(path)


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint a bare ``--resume`` takes (mmengine's ``last_checkpoint`` record of the
    work dir), or None when there is none."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    return path or None


def build_model(cfg, what: str = 'the model'):
    """Build ``cfg.model`` in the config's scope, turning a bad value or argument into one line
    (before a Runner logs the whole config)."""
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', None)):
        try:
            return MODELS.build(cfg.model)
        except Exception as e:  # noqa: BLE001
            msg = one_line(e) or construction_error(e)
            if msg is None:
                raise
            raise ToolError(f'{what} cannot be built: {_with_key_path(cfg.model, msg)}') from e


def _type_path(spec, name: str, path: str = 'model') -> Optional[str]:
    """The key path of the first config dict under ``spec`` whose ``type`` is ``name`` (with
    or without a scope prefix), or None."""
    if isinstance(spec, dict):
        kind = spec.get('type')
        if isinstance(kind, str) and name in (kind, re.split(r'[.:]', kind)[-1]):
            return path
        items = spec.items()
    elif isinstance(spec, (list, tuple)):
        items = enumerate(spec)
    else:
        return None
    for key, sub in items:
        found = _type_path(sub, name, f'{path}.{key}')
        if found:
            return found
    return None


def _with_key_path(model_cfg, msg: str) -> str:
    """``Class: why`` -> ``model.backbone: Class: why`` where the config says which part
    that class is (likewise for an unknown type)."""
    m = re.match(r"(\w+): |unknown type '([^']+)'", msg)
    path = m and _type_path(model_cfg, m.group(1) or m.group(2))
    return f'{path}: {msg}' if path else msg


def check_schedule_hooks(cfg, model) -> None:
    """Check the paths and ranges of the config's ``DynamicScheduleHook`` schedules against
    ``model`` (one line for a misspelt path or a value out of range, before any training)."""
    from mmdyn.engine.hooks.schedule_hook import DynamicScheduleHook
    for h in cfg.get('custom_hooks', None) or []:
        if isinstance(h, dict) and str(h.get('type', '')).split('.')[-1] == \
                'DynamicScheduleHook':
            kwargs = {k: v for k, v in h.items() if k not in ('type', 'priority')}
            DynamicScheduleHook(**kwargs).check_paths(model)


def check_optimizer_match(model, cfg, ckpt: dict, path: str) -> None:
    """Raise when the checkpoint's optimizer state has other parameter groups than the
    config's optimizer would build for ``model`` (torch refuses it only after the Runner has
    started). Nothing is checked when the optimizer cannot be built here."""
    saved = ckpt.get('optimizer') if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or 'param_groups' not in saved:
        return
    try:
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', None)):
            groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    except Exception:  # noqa: BLE001 - cannot tell here; torch says it when resuming
        return
    mine = [len(g['params']) for g in groups]
    theirs = [len(g.get('params', [])) for g in saved['param_groups']]
    if mine != theirs:
        why = (f'{len(theirs)} parameter groups, the config\'s optimizer has {len(mine)}'
               if len(mine) != len(theirs) else 'parameter groups of other sizes')
        raise ToolError(f'checkpoint {path}: its optimizer state does not fit the optimizer of '
                        f'the config ({why}); was it written by another config?')


def check_weights_match(model, ckpt: dict, path: str, hint: str = '') -> None:
    """Raise naming the first keys when a checkpoint's weights do not fit ``model``."""
    from .checkpoint import describe_mismatch, state_dict_mismatch, unwrap_state_dict
    sd = unwrap_state_dict(ckpt)
    problems = state_dict_mismatch(model, sd)
    if any(problems):
        raise ToolError(f'checkpoint {path} does not fit the model of the config: '
                        f'{describe_mismatch(*problems)}{hint}')


def load_checked_weights(model, path: str, ckpt: Optional[dict] = None,
                         hint: str = '') -> None:
    """Load the checkpoint at ``path`` into ``model`` in this process (``ckpt``: the file
    already read with :func:`check_checkpoint`): its weights must fit the model
    (:func:`check_weights_match`, one line otherwise) and are read from whatever container holds
    them (``state_dict``, ``model``, ``model_state_dict``, ``module``, a bare state dict;
    :func:`~mmdyn.utils.checkpoint.unwrap_state_dict`), where mmengine's ``load_checkpoint``
    reads only ``state_dict``. Remote paths go through mmengine's loader."""
    from .checkpoint import _REMOTE, read_checkpoint, unwrap_state_dict
    if str(path).startswith(_REMOTE):
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, path, map_location='cpu')
        return
    ckpt = read_checkpoint(path) if not ckpt else ckpt
    check_weights_match(model, ckpt, path, hint)
    model.load_state_dict(unwrap_state_dict(ckpt), strict=True)


_REGISTRY_MISS = re.compile(r"(\S+) is not in the (\S+) registry")


#: What a class refusing its arguments with a bare ``assert`` (no message) is reported as.
NO_MESSAGE = ('an argument has a value it does not accept (a check without a message; '
              'MMDYN_DEBUG=1 shows which)')
_BUILD_PREFIX = re.compile(r'^class `(\w+)` in [^:]+:(?: |$)')
_BAD_ARGS = re.compile(r'unexpected keyword argument|missing \d+ required positional argument'
                       r'|takes \d+ positional arguments? but')


def _text(exc: BaseException) -> str:
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    return ' '.join(text.split())


def construction_error(exc: BaseException) -> Optional[str]:
    """One line for an error raised while building an object from a config (a bad value or a
    misspelt argument: ``ValueError``, ``TypeError``, ``KeyError``, ``AssertionError``,
    ``AttributeError``, ``NotImplementedError``), naming the class mmengine was building."""
    if not isinstance(exc, (ValueError, TypeError, KeyError, AssertionError, AttributeError,
                            NotImplementedError, IndexError)):
        return None
    return _strip_build_prefixes(_text(exc)) or type(exc).__name__


def _strip_build_prefixes(text: str) -> str:
    """``class `A` in a.py: class `B` in b.py: msg`` (mmengine wraps an error once per nested
    build) -> ``B: msg``, naming the innermost class."""
    name = None
    m = _BUILD_PREFIX.match(text)
    while m:
        name, text = m.group(1), text[m.end():]
        m = _BUILD_PREFIX.match(text)
    if len(text) > 1 and text[0] == text[-1] == "'":  # KeyError quotes its message
        text = text[1:-1]
    if name and not text:  # a bare ``assert`` of the class refused a value
        text = NO_MESSAGE
    return f'{name}: {text}' if name else text


def _registry_suggestion(kind: str, where: str) -> str:
    """`` (did you mean 'X'?)`` for ``kind`` missing from the registry ``scope::name``."""
    import mmengine.registry as registries
    from .arguments import did_you_mean, registry_names
    scope, _, name = where.rpartition('::')
    roots = [r for r in vars(registries).values()
             if isinstance(r, registries.Registry) and r.name == name and r.parent is None]
    if not roots:
        return ''
    try:
        with roots[0].switch_scope_and_registry(scope or None) as reg:
            names = registry_names(reg)
    except Exception:  # noqa: BLE001 - a suggestion only
        return ''
    return did_you_mean(kind, names)


def one_line(exc: BaseException) -> Optional[str]:
    """The one-line message for a known kind of failure, or None for a real bug."""
    if isinstance(exc, UserError):
        return _strip_build_prefixes(_text(exc))
    if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError,
                        PermissionError)) and exc.filename:  # an output path that cannot be
        return f'cannot write {exc.filename}: {exc.strerror}'  # made or written
    text = str(exc.args[0]) if exc.args else str(exc)
    m = _REGISTRY_MISS.search(text)
    if isinstance(exc, KeyError) and m:
        return (f'unknown type {m.group(1)!r}: it is not in the {m.group(2)} registry'
                f'{_registry_suggestion(m.group(1), m.group(2))} (check the spelling; mmdyn '
                f"modules need the prefix, e.g. type='mmdyn.DiT', and "
                f"custom_imports=dict(imports=['mmdyn']))")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split('.')[0]
        if top in CODEBASES:
            return _missing_codebase_message(top, 'this config')
    # built from a config by mmengine (``class `X` in module: ...``) with a bad value or argument
    if _BUILD_PREFIX.match(_text(exc)) or (isinstance(exc, TypeError)
                                           and _BAD_ARGS.search(_text(exc))):
        return construction_error(exc)
    return None


def check_device(device: Optional[str]) -> None:
    """One line for a ``--device`` that torch cannot use here (a CUDA device without CUDA, an
    index past the last GPU, a name torch does not know)."""
    if device is None:
        return
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ToolError(f'--device {device}: not a device name (cpu, cuda, cuda:0, ...)') \
            from None
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ToolError(f'--device {device}: CUDA is not available')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ToolError(f'--device {device}: there are {torch.cuda.device_count()} GPUs')


@contextlib.contextmanager
def conversion_errors(src: str):
    """In a model converter: a ``ValueError`` / ``KeyError`` raised while converting ``src``
    (a checkpoint of another layout, a key that does not convert, shapes that do not fit) is
    the one line ``SRC: why`` (:class:`ToolError`; ``MMDYN_DEBUG=1`` shows the traceback)."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, KeyError) as e:
        raise ToolError(f'{src}: {_text(e)}') from e


def check_output_path(prog: str, option: str, path: str, kind: str = 'file',
                      exts: Optional[Sequence[str]] = None) -> None:
    """Before any work: ``path`` of ``option`` can be written as a ``kind`` (``'file'`` or
    ``'dir'``): no existing part of it is a file where a directory must be (nor a directory
    where the file goes), and a file has one of ``exts`` (lower case, with the dot) if given.
    Else :func:`arg_error`."""
    full = os.path.abspath(path)
    if kind == 'dir' and os.path.isfile(full):
        arg_error(prog, f'{option} {path} is a file, not a directory')
    if kind == 'file' and os.path.isdir(full):
        arg_error(prog, f'{option} {path} is a directory, not a file')
    parent = os.path.dirname(full)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ''
    if parent and not os.path.isdir(parent):
        arg_error(prog, f'{option} {path}: {parent} is a file, not a directory')
    if exts is not None and os.path.splitext(path)[1].lower() not in exts:
        arg_error(prog, f'{option} {path}: expected a file ending in {", ".join(exts)}')


def arg_error(prog: str, msg: str, code: int = 2):
    """A bad option value: ``prog: error: msg`` on stderr (one line, no usage), exit ``code``."""
    print(f'{prog}: error: {msg}', file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def friendly_errors(prog: Optional[str], code: int = 2):
    """Turn known input errors raised in the block into ``prog: error: <one line>`` (``error:
    <one line>`` without ``prog``) on stderr and exit with ``code``. ``MMDYN_DEBUG=1`` re-raises
    them with their traceback."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        msg = one_line(e)
        if msg is None or os.environ.get('MMDYN_DEBUG'):
            raise
        print(f'{prog}: error: {msg}' if prog else f'error: {msg}', file=sys.stderr, flush=True)
        sys.exit(code)
