"""Inference with mmdyn configs through the codebases' own APIs.

The codebases' model builders (``mmseg.apis.init_model``, ``mmdet.apis.init_detector``,
``mmpretrain.apis.get_model`` / ``init_model`` and the inferencers that use them) build the stock
top-level model (``EncoderDecoder``, ``MaskRCNN``, ``ImageClassifier``, ...) without a Runner, so
no :class:`mmdyn.engine.DynamicStatsHook` installs the records protocol of
:mod:`mmdyn.models.utils.records`: their data samples then carry no ``dynamic_flops``.
:func:`enable_dynamic_records` installs it on such a model (or an inferencer's ``model``);
:func:`init_model` is the codebases' builder followed by it.
"""
import contextlib
import copy
import os
import os.path as osp
from typing import Dict, Optional, Union

import numpy as np
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmdyn.models.utils.records import attach_dynamic_records, samples_records
from mmdyn.utils.errors import UserTypeError, UserValueError

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
    if checkpoint is not None:
        from mmdyn.utils.checkpoint import _REMOTE, loadable_checkpoint, read_checkpoint
        if not str(checkpoint).startswith(_REMOTE):
            # one line for a missing / unreadable file; weights kept under another key than
            # 'state_dict' (or without 'meta', which mmseg's init_model reads) are rewrapped
            checkpoint = loadable_checkpoint(checkpoint, read_checkpoint(checkpoint))
    with DefaultScope.overwrite_default_scope(codebase):
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


def as_bgr_image(img, where: str = 'image'):
    """A path as it is; an array as an ``H x W x 3`` BGR image: a grayscale ``H x W`` (or
    ``H x W x 1``) array is repeated over three channels, the alpha channel of ``H x W x 4``
    dropped; a 16-bit array is brought to 8 bits as OpenCV reads a 16-bit PNG in colour (the high
    byte), since the data preprocessors' mean and std are for 0..255; any other integer or
    float array holds 0..255 values and is rounded to 8 bits (the codebases' resizes take
    uint8; a float image of 0..1 values is refused, not read as a black one). Anything else is
    a ``ValueError`` naming the shape, the dtype or the values."""
    if isinstance(img, (str, os.PathLike)):
        path = os.fspath(img)
        if not osp.isfile(path):
            raise UserValueError(f'{where} {path} does not exist')
        return path
    if not isinstance(img, np.ndarray):
        raise UserTypeError(f'{where} must be a file path or a numpy array, not '
                            f'{type(img).__name__}')
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype == np.bool_ or img.dtype.kind not in 'uif':
        raise UserTypeError(f'{where} has dtype {img.dtype}; expected uint8 (0..255), uint16 '
                            'or float')
    elif img.dtype != np.uint8 and img.size:
        lo, hi = float(img.min()), float(img.max())
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo and hi <= 255):
            raise UserValueError(f'{where} ({img.dtype}) has values in [{lo:g}, {hi:g}]; '
                                 'expected 0..255')
        if img.dtype.kind == 'f' and 0 < hi <= 1:
            raise UserValueError(f'{where} is a float image of values in [0, 1]; multiply it '
                                 'by 255 (the models take 0..255)')
        img = np.rint(img).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or min(img.shape[:2]) < 1:
        raise UserValueError(f'{where} has shape {img.shape}; expected H x W (grayscale), '
                             'H x W x 3 (BGR) or H x W x 4 (BGRA)')
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


@contextlib.contextmanager
def _own_config(model):
    """The codebases' inference functions rewrite the model's test pipeline in place (mmseg turns
    ``LoadImageFromFile`` into ``LoadImageFromNDArray`` for an array, so a path fails next):
    give them a copy of the config for the call."""
    attr = 'cfg' if getattr(model, 'cfg', None) is not None else None
    if attr is None:
        yield
        return
    saved = model.cfg
    model.cfg = copy.deepcopy(saved)
    try:
        yield
    finally:
        model.cfg = saved


def inference_model(model: nn.Module, img, codebase: Optional[str] = None):
    """Run a model from :func:`init_model` (or a codebase builder) on one image (path or
    array: BGR ``H x W x 3``, grayscale ``H x W``, BGRA) or a list of them, of any sizes; returns
    the codebase's data sample(s) (``SegDataSample``, ``DetDataSample``, mmpretrain's
    ``DataSample``) with the dynamic records in their metainfo. Each call runs in the model's
    codebase's registry scope, whatever scope the process is in."""
    enable_dynamic_records(model)
    if codebase is None:
        cfg = getattr(model, 'cfg', None) or getattr(model, '_config', None)
        if cfg is None:
            raise ValueError('the model carries no config; pass codebase=')
        codebase = codebase_of(cfg)
    single = not isinstance(img, (list, tuple))
    imgs = [img] if single else list(img)
    imgs = [as_bgr_image(im, 'image' if single else f'image {i}') for i, im in enumerate(imgs)]
    with DefaultScope.overwrite_default_scope(codebase):
        if codebase == 'mmseg':
            from mmseg.apis import inference_model as run
            out = []
            for im in imgs:  # one call each: the images may differ in size
                with _own_config(model):
                    out.append(run(model, im))
        elif codebase == 'mmdet':
            from mmdet.apis import inference_detector
            out = []
            for im in imgs:  # one call each: arrays and paths may be mixed
                with _own_config(model):
                    out.append(inference_detector(model, im))
        else:
            from mmpretrain.apis import ImageClassificationInferencer
            inferencer = ImageClassificationInferencer(model=model)
            out = inferencer(imgs, return_datasamples=True)
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
