"""Check the parts a Runner builds late (optimizer, parameter schedulers, data loaders and their
pipelines, evaluators, hooks) before it logs the config, so that a misspelt type or argument
or a bad value is one line naming the config key path (``optim_wrapper.optimizer: ...``).

Types and argument names are looked up without building anything; only cheap parts without
side effects (the optimizer of the built model, pipeline transforms) are built, to catch bad
values they refuse themselves.
"""
from typing import Iterator, Optional, Tuple

from .arguments import (accepted_arguments, did_you_mean, registry_names,
                        unknown_argument_message)
from .cli import NO_MESSAGE, ToolError, construction_error, one_line

__all__ = ['check_spec', 'check_runner_parts']


def _resolve(registry, scope: Optional[str], spec: dict, path: str):
    """The class ``spec['type']`` names in ``registry`` (as seen from ``scope``)."""
    kind = spec.get('type')
    if not isinstance(kind, str):
        return kind if isinstance(kind, type) else None
    with registry.switch_scope_and_registry(scope) as reg:
        found = reg.get(kind)
        if found is None:
            raise ToolError(f'{path}.type: unknown type {kind!r} (not in the {reg.scope}::'
                            f'{reg.name} registry){did_you_mean(kind, registry_names(reg))}')
    return found


def check_spec(registry, scope: Optional[str], spec, path: str, skip=('type', ),
               follow_kwargs: bool = True):
    """Raise a one-line :class:`ToolError` for a ``type`` that ``registry`` does not know or an
    argument its class does not take (see :func:`~mmdyn.utils.arguments.accepted_arguments`); returns the class (None when ``spec`` is not a config
    dict with a type)."""
    if not isinstance(spec, dict) or 'type' not in spec:
        return None
    cls = _resolve(registry, scope, spec, path)
    valid = accepted_arguments(cls, follow_kwargs) if isinstance(cls, type) else None
    if valid is not None:
        for key in spec:
            if key not in skip and not key.startswith('_') and key not in valid:
                raise ToolError(f'{path}: {unknown_argument_message(cls.__name__, key, valid)}')
    return cls


def _built(registry, scope, spec, path, **default_args):
    """Build ``spec``; a bad value becomes one line prefixed with ``path``."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        try:
            return registry.build(spec, default_args=default_args or None)
        except Exception as e:  # noqa: BLE001
            msg = one_line(e) or construction_error(e)
            if msg is None:
                raise
            if not e.args:  # mmengine names the class only for an error with a message
                msg = f"{str(spec['type']).split('.')[-1]}: {NO_MESSAGE}"
            raise ToolError(f'{path}: {msg}') from e


def _as_items(value, path: str) -> Iterator[Tuple[str, object]]:
    if isinstance(value, dict):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield f'{path}.{i}', v


def check_optimizer(cfg, model, scope) -> None:
    """``optim_wrapper``: the optimizer's type and arguments, then the optimizer built for
    ``model`` (torch refuses a negative learning rate, betas out of range, ...)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
    ow = cfg.get('optim_wrapper', None)
    if not isinstance(ow, dict):
        return
    if 'type' in ow:
        check_spec(OPTIM_WRAPPERS, scope, ow, 'optim_wrapper',
                   skip=('type', 'optimizer', 'paramwise_cfg', 'constructor'))
    if 'constructor' in ow:  # a custom constructor reads the config its own way
        return
    opt = ow.get('optimizer')
    check_spec(OPTIMIZERS, scope, opt, 'optim_wrapper.optimizer', skip=('type', 'params'))
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        try:
            build_optim_wrapper(model, ow)
        except Exception as e:  # noqa: BLE001
            msg = one_line(e) or construction_error(e)
            if msg is None:
                raise
            raise ToolError(f'optim_wrapper: {msg}') from e


def check_schedulers(cfg, scope) -> None:
    from mmengine.registry import PARAM_SCHEDULERS
    for path, spec in _as_items(cfg.get('param_scheduler', None), 'param_scheduler'):
        check_spec(PARAM_SCHEDULERS, scope, spec, path)


def _check_dataset(ds, scope, path) -> None:
    from mmengine.registry import DATASETS, TRANSFORMS
    check_spec(DATASETS, scope, ds, path)
    if not isinstance(ds, dict):
        return
    for key in ('dataset', 'datasets'):  # wrappers: RepeatDataset, ConcatDataset, ...
        for sub_path, sub in _as_items(ds.get(key), f'{path}.{key}'):
            _check_dataset(sub, scope, sub_path)
    for t_path, t in _as_items(ds.get('pipeline'), f'{path}.pipeline'):
        if isinstance(t, dict) and 'type' in t:
            # a transform's **kwargs may go to another transform (RandomResize -> Resize)
            check_spec(TRANSFORMS, scope, t, t_path, follow_kwargs=False)
            _built(TRANSFORMS, scope, t, t_path)


def check_dataloaders(cfg, scope, splits) -> None:
    """Each split's batch size (a positive integer), sampler, dataset (type, arguments,
    wrapped datasets) and pipeline (each transform's type and arguments, built)."""
    from mmengine.registry import DATA_SAMPLERS
    for split in splits:
        name = f'{split}_dataloader'
        loader = cfg.get(name, None)
        if not isinstance(loader, dict):
            continue
        bs = loader.get('batch_size', 1)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ToolError(f'{name}.batch_size must be a positive integer, got {bs!r}')
        nw = loader.get('num_workers', 0)
        if isinstance(nw, bool) or not isinstance(nw, int) or nw < 0:
            raise ToolError(f'{name}.num_workers must be an integer >= 0, got {nw!r}')
        if nw == 0 and loader.get('persistent_workers', False):
            raise ToolError(f'{name}: persistent_workers=True needs num_workers > 0 (with '
                            f'{name}.num_workers=0 add {name}.persistent_workers=False)')
        check_spec(DATA_SAMPLERS, scope, loader.get('sampler'), f'{name}.sampler',
                   skip=('type', 'dataset', 'seed'))
        _check_dataset(loader.get('dataset'), scope, f'{name}.dataset')


def check_evaluators(cfg, scope, splits) -> None:
    from mmengine.registry import METRICS
    for split in splits:
        name = f'{split}_evaluator'
        for path, spec in _as_items(cfg.get(name, None), name):
            if isinstance(spec, dict) and 'metrics' in spec:  # an Evaluator of metrics
                for sub_path, sub in _as_items(spec['metrics'], f'{path}.metrics'):
                    check_spec(METRICS, scope, sub, sub_path)
            else:
                check_spec(METRICS, scope, spec, path)


def check_hooks(cfg, scope) -> None:
    """``default_hooks`` and ``custom_hooks``: each hook's type and argument names."""
    from mmengine.registry import HOOKS
    default = cfg.get('default_hooks', None) or {}
    for key, spec in default.items():
        check_spec(HOOKS, scope, spec, f'default_hooks.{key}', skip=('type', 'priority'))
    for path, spec in _as_items(cfg.get('custom_hooks', None), 'custom_hooks'):
        check_spec(HOOKS, scope, spec, path, skip=('type', 'priority'))


def check_runner_parts(cfg, model=None, splits=('train', 'val', 'test')) -> None:
    """All of the above for ``splits`` (the optimizer and schedulers when ``'train'`` is one of
    them and ``model`` is given)."""
    scope = cfg.get('default_scope', None)
    if 'train' in splits:
        if model is not None:
            check_optimizer(cfg, model, scope)
        check_schedulers(cfg, scope)
    check_dataloaders(cfg, scope, splits)
    check_evaluators(cfg, scope, [s for s in splits if s != 'train'])
    check_hooks(cfg, scope)
