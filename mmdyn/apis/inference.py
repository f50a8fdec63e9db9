"""Inference with mmdyn configs through the codebases' own APIs.

The codebases' model builders (``mmseg.apis.init_model``, ``mmdet.apis.init_detector``,
``mmpretrain.apis.get_model`` / ``init_model`` and the inferencers that use them) build the stock
top-level model (``EncoderDecoder``, ``MaskRCNN``, ``ImageClassifier``, ...) without a Runner, so
no :class:`mmdyn.engine.DynamicStatsHook` installs the records protocol of
:mod:`mmdyn.models.utils.records`: their data samples then carry no ``dynamic_flops``.
:func:`enable_dynamic_records` installs it on such a model (or an inferencer's ``model``);
:func:`init_model` is the codebases' builder followed by it.
"""
import os.path as osp
from typing import Dict, Optional, Union

import torch.nn as nn
from mmengine.config import Config

from mmdyn.models.utils.records import attach_dynamic_records, samples_records

__all__ = ['codebase_of', 'enable_dynamic_records', 'init_model', 'inference_model',
           'dynamic_records']

CODEBASES = ('mmseg', 'mmdet', 'mmpretrain')
# top-level mmdyn model types and the codebase whose data samples they return
_MMDYN_TOP_LEVEL = {'DoViTEncoderDecoder': 'mmseg', 'DVTClassifier': 'mmpretrain'}


def _load(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    if isinstance(config, str):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {config} does not exist')
        config = Config.fromfile(config)
    elif not isinstance(config, Config):
        raise TypeError(f'config must be a path or a Config, not {type(config).__name__}')
    else:
        config = config.copy()
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def codebase_of(config: Union[str, Config]) -> str:
    """``'mmseg'``, ``'mmdet'`` or ``'mmpretrain'``: the codebase a config's model belongs to
    (its ``default_scope``, else the scope of ``model.type``)."""
    cfg = _load(config)
    scope = cfg.get('default_scope', None)
    if scope in CODEBASES:
        return scope
    mtype = str(cfg.model.get('type', ''))
    prefix, _, name = mtype.rpartition('.')
    if prefix in CODEBASES:
        return prefix
    if name in _MMDYN_TOP_LEVEL:
        return _MMDYN_TOP_LEVEL[name]
    raise ValueError(f'cannot tell the codebase of the config (default_scope={scope!r}, '
                     f'model.type={mtype!r}); expected one of {", ".join(CODEBASES)}')


def enable_dynamic_records(model_or_inferencer):
    """Make predict-mode forwards write ``dynamic_flops`` / ``dynamic_static_flops`` /
    ``dynamic_stats`` into the metainfo of each returned data sample.

    Takes a model (wrappers are unwrapped) or an inferencer (anything with a ``model``
    attribute: ``MMSegInferencer``, ``DetInferencer``, ``ImageClassificationInferencer``) and
    returns it. Idempotent; a model without dynamic modules is left as it is.
    """
    obj = model_or_inferencer
    model = obj if isinstance(obj, nn.Module) else getattr(obj, 'model', None)
    if not isinstance(model, nn.Module):
        raise TypeError(f'expected a model or an inferencer, not {type(obj).__name__}')
    attach_dynamic_records(model)
    return obj


def init_model(config: Union[str, Config], checkpoint: Optional[str] = None,
               device: str = 'cpu', cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the model of an mmdyn (or any mmseg / mmdet / mmpretrain) config with its codebase's
    own builder, load ``checkpoint``, put it in eval mode on ``device`` and switch the dynamic
    records on. Returns the codebase's model; use it with the codebase's inference functions or
    :func:`inference_model`."""
    cfg = _load(config, cfg_options)
    codebase = codebase_of(cfg)
    if codebase == 'mmseg':
        from mmseg.apis import init_model as build
        model = build(cfg, checkpoint, device=device)
    elif codebase == 'mmdet':
        from mmdet.apis import init_detector
        model = init_detector(cfg, checkpoint, device=device)
    else:
        from mmpretrain.apis import get_model
        model = get_model(cfg, pretrained=checkpoint if checkpoint else False, device=device)
    return enable_dynamic_records(model)


def inference_model(model: nn.Module, img, codebase: Optional[str] = None):
    """Run a model from :func:`init_model` (or a codebase builder) on one image (path or BGR
    array) or a list of them; returns the codebase's data sample(s) (``SegDataSample``,
    ``DetDataSample``, mmpretrain's ``DataSample``) with the dynamic records in their metainfo.
    """
    enable_dynamic_records(model)
    if codebase is None:
        cfg = getattr(model, 'cfg', None) or getattr(model, '_config', None)
        if cfg is None:
            raise ValueError('the model carries no config; pass codebase=')
        codebase = codebase_of(cfg)
    if codebase == 'mmseg':
        from mmseg.apis import inference_model as run
        return run(model, img)
    if codebase == 'mmdet':
        from mmdet.apis import inference_detector
        return inference_detector(model, img)
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(model=model)
    single = not isinstance(img, (list, tuple))
    out = inferencer(img if not single else [img], return_datasamples=True)
    return out[0] if single else out


def dynamic_records(sample) -> Optional[Dict]:
    """The dynamic records of one data sample (object or dict), or None when it has none:
    ``dict(flops, gflops, static_flops, stats)``; ``stats`` holds e.g. ``kept_ratio`` (the
    token ratio), ``fine_ratio``, ``flops_ratio``. One FLOP is one multiply-add."""
    rec = samples_records([sample])[0]
    if rec is None:
        return None
    rec['gflops'] = rec['flops'] / 1e9
    return rec
