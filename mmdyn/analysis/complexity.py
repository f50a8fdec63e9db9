"""Whole-model complexity: params, static FLOPs and realised (dynamic) FLOPs of a model.

Unit: **one multiply-add = one FLOP** (MACs), the unit of :mod:`mmdyn.analysis.flops` and of
mmengine's ``FlopAnalyzer``.

How a model is counted
----------------------
A model is split into its backbone (``model.backbone``; a bare backbone is its own backbone) and
the rest (neck, heads):

* **backbone**: analytically through its ``static_flops(img_shape)`` / ``flops_breakdown`` when it
  has them (mmdyn's hosts and dynamic backbones). Otherwise it is traced with mmengine's
  ``FlopAnalyzer`` (``backbone_method == 'traced'``), to which this module adds a handle for
  ``scaled_dot_product_attention`` (``2 * Nq * Nk * head_dim`` per head, which mmengine drops)
  and ``baddbmm``.
* **rest**: traced with ``FlopAnalyzer`` through the model's own tensor-mode forward
  (``model(inputs, data_samples, mode='tensor')``: mmseg ``decode_head.forward`` after the neck,
  mmdet ``_forward`` (RPN + RoI heads for two-stage detectors), mmpretrain ``head``), with the
  backbone replaced by a replay of its outputs, so the backbone is never counted twice and, for
  static figures, never run: its output shapes come from a run on the ``meta`` device (nothing
  is computed) when the backbone allows it.
* **realised figures** of dynamic modules (``is_dynamic_module``) are read from their
  ``last_flops`` after a real forward of ``inputs``: per image (``Tensor[B]``). A dynamic
  backbone contributes its ``last_flops``; dynamic modules nested inside a static backbone
  replace their ``static_flops`` by their ``last_flops``. The caller averages over images.

All FLOP figures in the result are **per image**; ``rest`` figures of a batch are divided by its
size (they are equal per image for same-shape batches, except for the proposal-dependent RoI
heads of two-stage detectors, whose batch mean is then given).
"""
import contextlib
import copy
import math
import warnings
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from mmdyn.models.utils.dynamic import find_dynamic_modules, full_compute, unwrap_model

__all__ = [
    'model_complexity', 'get_backbone', 'count_params', 'backbone_static_flops',
    'default_data_samples', 'traced_flops', 'group_breakdown', 'UNIT', 'ConfigError',
    'load_config', 'build_model_from_cfg', 'init_task_heads', 'default_img_shape',
    'generated_images', 'generated_batch', 'dataset_root', 'dataset_batches', 'stdout_to_stderr'
]

UNIT = 'GFLOPs (1 FLOP = 1 multiply-add)'


# ----------------------------------------------------------------------------- helpers
def get_backbone(model: nn.Module) -> nn.Module:
    """``model.backbone`` when the model has one, else the model itself (a bare backbone)."""
    model = unwrap_model(model)
    bb = getattr(model, 'backbone', None)
    return bb if isinstance(bb, nn.Module) else model


def count_params(module: nn.Module) -> int:
    """All parameters (trainable or frozen), shared ones once."""
    return int(sum(p.numel() for p in module.parameters()))


def _codebase(model: nn.Module) -> Optional[str]:
    """``'mmdet' | 'mmseg' | 'mmpretrain'`` from the model's class hierarchy (mmdyn subclasses
    of their models count as theirs), else None."""
    for cls in type(unwrap_model(model)).__mro__:
        root = cls.__module__.split('.')[0]
        if root in ('mmdet', 'mmseg', 'mmpretrain'):
            return root
    return None


def _in_channels(backbone: nn.Module) -> int:
    c = getattr(backbone, 'in_channels', 3)
    return c if isinstance(c, int) and c > 0 else 3


def _first_param_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device('cpu')


def default_data_samples(model: nn.Module, batch_size: int,
                         img_shape: Sequence[int]) -> Optional[list]:
    """Data samples with the meta information a tensor-mode forward needs, for images that were
    neither resized nor padded (``img_shape == ori_shape == pad_shape``). ``None`` for models
    that are not mmdet / mmseg / mmpretrain models."""
    h, w = int(img_shape[0]), int(img_shape[1])
    cb = _codebase(model)
    if cb == 'mmdet':
        from mmdet.structures import DetDataSample
        cls, extra = DetDataSample, dict(scale_factor=(1., 1.), batch_input_shape=(h, w))
    elif cb == 'mmseg':
        from mmseg.structures import SegDataSample
        cls, extra = SegDataSample, dict(batch_input_shape=(h, w))
    elif cb == 'mmpretrain':
        from mmpretrain.structures import DataSample
        cls, extra = DataSample, {}
    else:
        return None
    samples = []
    for i in range(batch_size):
        s = cls()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), img_id=i,
                            img_path=f'generated_{i}.png', **extra))
        if cb == 'mmdet':  # some heads (Sparse R-CNN) read the (here empty) ground truth
            from mmengine.structures import InstanceData
            s.gt_instances = InstanceData(bboxes=torch.zeros((0, 4)),
                                          labels=torch.zeros((0, ), dtype=torch.long))
        samples.append(s)
    return samples


# ----------------------------------------------------------------------------- tracing
def _sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``q @ k^T`` and ``attn @ v`` of ``scaled_dot_product_attention``: ``2*B*h*Nq*Nk*d``
    (value head dim for the second product)."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return int(batch * nq * nk * (d + dv))


def _flop_analyzer(module: nn.Module, inputs: tuple):
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.jit_handles import bmm_flop_jit

    def baddbmm_flop_jit(inputs, outputs):
        # aten::baddbmm(self, batch1, batch2, beta, alpha): a bmm on batch1 @ batch2
        return bmm_flop_jit(inputs[1:3], outputs)

    fa = FlopAnalyzer(module, inputs)
    fa.set_op_handle(**{
        'aten::scaled_dot_product_attention': _sdpa_flop_jit,
        'aten::baddbmm': baddbmm_flop_jit,
    })
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings('none')
    return fa


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def traced_flops(module: nn.Module, inputs: tuple) -> Tuple[int, Dict[str, int], Counter]:
    """Trace ``module(*inputs)`` once with ``FlopAnalyzer`` (plus the SDPA handle).

    Returns ``(total, by_module, unsupported_ops)`` for the whole batch.
    """
    fa = _flop_analyzer(module, inputs)
    with _quiet(), torch.no_grad():
        total = int(fa.total())
        by_mod = {k: int(v) for k, v in fa.by_module().items()}
        unsupported = Counter(fa.unsupported_ops())
    return total, by_mod, unsupported


class _Replay(nn.Module):
    """Stands in for the backbone: returns the outputs it was given."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.out = None

    def forward(self, *args, **kwargs):
        return self.out


class _RestOfModel(nn.Module):
    """Runs ``call()`` (the model's tensor-mode forward) with the backbone outputs given to
    ``forward`` as flat tensors, so that the tracer sees them as inputs."""

    def __init__(self, model: nn.Module, replay: _Replay, spec, call: Callable[[], Any]):
        super().__init__()
        self.model = model
        self._replay = [replay]  # not a submodule of this wrapper (it is one of the model)
        self._spec = spec
        self._call = call

    def forward(self, *flat):
        self._replay[0].out = tree_unflatten(list(flat), self._spec)
        out = self._call()
        # the tracer accepts tensors and (nested) tuples/lists/dicts of them only
        leaves, _ = tree_flatten(out)
        leaves = [x for x in leaves if isinstance(x, torch.Tensor)]
        return tuple(leaves) if leaves else flat[0].sum() * 0


@contextlib.contextmanager
def _backbone_replaced(model: nn.Module, replay: nn.Module):
    old = model.backbone
    model.backbone = replay
    try:
        yield
    finally:
        model.backbone = old


def _scoped(fn: Callable, name: str) -> Callable:
    def call(*args, **kwargs):
        state = torch._C._get_tracing_state()
        if state:
            state.push_scope(name)
        try:
            return fn(*args, **kwargs)
        finally:
            if state:
                state.pop_scope()

    return call


@contextlib.contextmanager
def _scoped_methods(model: nn.Module, prefix: str, methods=('forward', 'predict')):
    """Attribute to each child of ``model`` the ops of its ``forward`` / ``predict`` even when
    they are called as methods (mmseg calls ``decode_head.forward(x)``), not through
    ``__call__``, which is all the tracer's scope hooks see."""
    patched = []
    for name, child in model.named_children():
        if name in ('backbone', 'data_preprocessor'):
            continue
        for meth in methods:
            fn = getattr(child, meth, None)
            if callable(fn) and meth not in vars(child):
                setattr(child, meth, _scoped(fn, f'{prefix}.{name}'))
                patched.append((child, meth))
    try:
        yield
    finally:
        for child, meth in patched:
            delattr(child, meth)


def _tensor_mode_call(model: nn.Module, inputs: torch.Tensor,
                      data_samples: Optional[list]) -> Callable[[], Any]:
    if _codebase(model) is not None:
        return lambda: model(inputs, data_samples, mode='tensor')
    return lambda: model(inputs)


def _rest_flops(model: nn.Module, feats: Any, inputs: torch.Tensor,
                data_samples: Optional[list]) -> Tuple[int, Dict[str, int], Counter]:
    """FLOPs of everything but the backbone, for the batch, given the backbone's outputs."""
    flat, spec = tree_flatten(feats)
    if not all(isinstance(x, torch.Tensor) for x in flat):
        raise TypeError('the backbone outputs must be tensors or (nested) lists/tuples/dicts of '
                        'tensors to trace the rest of the model')
    replay = _Replay(_in_channels(model.backbone))
    call = _tensor_mode_call(model, inputs, data_samples)
    with _backbone_replaced(model, replay), _scoped_methods(model, 'model'):
        wrapper = _RestOfModel(model, replay, spec, call)
        total, by_mod, unsupported = traced_flops(wrapper, tuple(flat))
    # names of the wrapper are 'model.<child>'; drop the prefix
    by_mod = {k[len('model.'):]: v for k, v in by_mod.items() if k.startswith('model.')}
    return total, by_mod, unsupported


# ----------------------------------------------------------------------------- backbone
def _has_analytic(backbone: nn.Module) -> bool:
    return callable(getattr(backbone, 'static_flops', None))


def backbone_static_flops(backbone: nn.Module, img_shape: Sequence[int]
                          ) -> Tuple[Optional[int], Dict[str, int]]:
    """``(total, breakdown)`` from the backbone's analytic formulas, or ``(None, {})`` when it has
    none (``static_flops`` missing or not implemented)."""
    if not _has_analytic(backbone):
        return None, {}
    try:
        total = backbone.static_flops(tuple(int(s) for s in img_shape))
    except NotImplementedError:
        return None, {}
    breakdown = {}
    fb = getattr(backbone, 'flops_breakdown', None)
    if callable(fb):
        try:
            breakdown = {k: int(v) for k, v in fb(tuple(int(s) for s in img_shape)).items()}
        except NotImplementedError:
            breakdown = {}
    return int(total), breakdown


def _is_record(name: str) -> bool:
    """Whether a dynamic module's attribute is a record of its last forward."""
    return name.startswith(('last_', '_last_')) or name in ('expected_cost', 'aux_losses')


@contextlib.contextmanager
def kept_records(backbone: nn.Module):
    """Run a forward for a count (static figures) without touching what the dynamic modules
    recorded of the last real forward: every ``last_*`` / ``_last_*`` attribute, the expected
    cost and the losses are as they were after the block."""
    saved = [(m, {k: v for k, v in vars(m).items() if _is_record(k)})
             for m in find_dynamic_modules(backbone)]
    try:
        yield
    finally:
        for m, rec in saved:
            for k in [k for k in vars(m) if _is_record(k) and k not in rec]:
                delattr(m, k)
            for k, v in rec.items():
                m.__dict__[k] = v


def _meta_forward(backbone: nn.Module, shape: Tuple[int, ...]) -> Optional[Any]:
    """Output shapes of the backbone from a forward on the meta device (nothing computed):
    the parameters are swapped for meta ones for the call. ``None`` when the backbone cannot run
    on meta tensors (data-dependent code, CPU constants...)."""
    from torch.func import functional_call
    state = {n: torch.empty_like(t, device='meta')
             for n, t in list(backbone.named_parameters()) + list(backbone.named_buffers())}
    x = torch.zeros(shape, device='meta')
    try:
        with _quiet(), torch.no_grad(), full_compute(backbone), kept_records(backbone):
            out = functional_call(backbone, state, (x, ), strict=False)
    except Exception:  # noqa: BLE001 - any failure means: run it for real instead
        return None
    flat, spec = tree_flatten(out)
    if not all(isinstance(t, torch.Tensor) and t.device.type == 'meta' for t in flat):
        return None
    return flat, spec


def _zeros_like_meta(flat: list, spec, device: torch.device):
    return tree_unflatten([torch.zeros(t.shape, dtype=t.dtype, device=device) for t in flat],
                          spec)


# ----------------------------------------------------------------------------- breakdown
def group_breakdown(breakdown: Dict[str, float], depth: int = 1) -> 'OrderedDict[str, float]':
    """Sum a flat ``{dotted.name: flops}`` breakdown to names cut after the ``depth``-th
    numeric component (``'backbone.stages.0.blocks.3'`` -> ``'backbone.stages.0'`` at depth 1),
    keeping the first-seen order. Names without numeric components are kept whole."""
    out = OrderedDict()
    for k, v in breakdown.items():
        parts, keep, seen = k.split('.'), [], 0
        for p in parts:
            keep.append(p)
            if p.isdigit():
                seen += 1
                if seen == depth:
                    break
        key = '.'.join(keep)
        out[key] = out.get(key, 0) + v
    return out


# ----------------------------------------------------------------------------- main entry
def _image_shape_and_batch(inputs, img_shape) -> Tuple[Tuple[int, int], int]:
    """``(img_shape, batch)`` of ``inputs`` (a ``[B, C, H, W]`` tensor), else of
    ``img_shape`` (batch 1); a ``ValueError`` for neither or a malformed one."""
    if inputs is None and img_shape is None:
        raise ValueError('model_complexity needs inputs or img_shape')
    if inputs is not None:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            raise ValueError(f'inputs must be a [B, C, H, W] tensor, got '
                             f'{getattr(inputs, "shape", type(inputs))}')
        img_shape = tuple(int(s) for s in inputs.shape[-2:])
        batch = int(inputs.shape[0])
    else:
        if len(img_shape) != 2 or min(int(s) for s in img_shape) <= 0:
            raise ValueError(f'img_shape must be (H, W), got {img_shape!r}')
        img_shape = tuple(int(s) for s in img_shape)
        batch = 1
    return img_shape, batch


def _params_breakdown(model: nn.Module, bare: bool) -> Dict[str, int]:
    """Parameters per child of ``model`` (``{'backbone': all}`` for a bare backbone)."""
    params_breakdown = OrderedDict()
    if bare:
        params_breakdown['backbone'] = count_params(model)
    else:
        for name, child in model.named_children():
            n = count_params(child)
            if n:
                params_breakdown[name] = n
    return params_breakdown


def _traced_backbone_flops(backbone: nn.Module, img_shape, device, dyn_mods,
                           unsupported: Counter) -> Tuple[float, Dict[str, float]]:
    """Static FLOPs of a backbone with no analytic count, traced on a zero image (every
    dynamic module computing all), with its leaf-level breakdown; adds what the tracer could
    not count to ``unsupported``."""
    x = torch.zeros((1, _in_channels(backbone)) + img_shape, device=device)
    ctx = full_compute(backbone) if dyn_mods else contextlib.nullcontext()
    with ctx, kept_records(backbone):
        total, by_mod, uns = traced_flops(backbone, (x, ))
    unsupported.update(uns)
    b_static = total
    # leaf-level breakdown: direct children of the backbone's children
    b_break = {k: v for k, v in by_mod.items() if k and k.count('.') <= 1 and v}
    b_break = {k: v for k, v in b_break.items()
               if not any(o.startswith(k + '.') for o in b_break)}
    return b_static, b_break


def _run_backbone(backbone: nn.Module, inputs: torch.Tensor, dyn_mods, b_static, img_shape,
                  batch: int):
    """``(features, realised backbone FLOPs Tensor[B] or None)`` of a real run on
    ``inputs``."""
    b_dyn = None
    for m in dyn_mods:  # so that a module that records nothing cannot pass stale records
        if callable(getattr(m, 'reset_dynamic_records', None)):
            m.reset_dynamic_records()
    with torch.no_grad():
        feats = backbone(inputs)
    if dyn_mods:
        missing = [type(m).__name__ for m in dyn_mods
                   if getattr(m, 'last_flops', None) is None]
        if missing:
            raise RuntimeError(f'dynamic modules {missing} recorded no last_flops')
        if backbone in dyn_mods:
            b_dyn = backbone.last_flops.detach().double().cpu()
        else:
            b_dyn = torch.full((batch, ), float(b_static), dtype=torch.float64)
            for m in dyn_mods:
                b_dyn = b_dyn + m.last_flops.detach().double().cpu() - float(
                    m.static_flops(img_shape))
        if b_dyn.numel() != batch:
            raise RuntimeError(f'last_flops has {b_dyn.numel()} entries for a batch of '
                               f'{batch}')
    return feats, b_dyn


def _rest_of_model(model: nn.Module, backbone: nn.Module, feats, inputs, data_samples,
                   img_shape, batch: int, device, unsupported: Counter):
    """``(FLOPs per image, breakdown)`` of everything but the backbone, traced on ``feats``
    (from a zero image when there are none); adds untraceable ops to ``unsupported``."""
    rest_break: Dict[str, float] = OrderedDict()
    if feats is None:
        shape = (1, _in_channels(backbone)) + img_shape
        meta = _meta_forward(backbone, shape)
        if meta is not None:
            feats = _zeros_like_meta(meta[0], meta[1], device)
            stand_in = torch.empty(shape, device='meta')
        else:
            x = torch.zeros(shape, device=device)
            with torch.no_grad(), full_compute(backbone), kept_records(backbone):
                feats = backbone(x)
            stand_in = x
        try:
            total, by_mod, uns = _rest_flops(model, feats, stand_in, data_samples)
        except Exception:
            if stand_in.device.type != 'meta':
                raise
            # some head looked at the (meta) image: trace again with a real one
            total, by_mod, uns = _rest_flops(model, feats, torch.zeros(shape, device=device),
                                             data_samples)
    else:
        total, by_mod, uns = _rest_flops(model, feats, inputs, data_samples)
    unsupported.update(uns)
    rest_total = total / batch
    named = 0.
    for name, _ in model.named_children():
        if name in ('backbone', 'data_preprocessor'):
            continue
        v = by_mod.get(name, 0) / batch
        if v:
            rest_break[name] = v
            named += v
            for sub, sv in by_mod.items():
                if sub.startswith(name + '.') and sub.count('.') == 1 and sv:
                    rest_break[sub] = sv / batch
    if rest_total - named > 0.5:
        rest_break['other'] = rest_total - named
    return rest_total, rest_break


def model_complexity(model: nn.Module,
                     inputs: Optional[torch.Tensor] = None,
                     img_shape: Optional[Sequence[int]] = None,
                     data_samples: Optional[list] = None,
                     backbone_only: bool = False) -> Dict[str, Any]:
    """Params and FLOPs of ``model`` (see the module doc for what is counted how).

    Args:
        model: an mmseg / mmdet / mmpretrain model (anything with ``.backbone`` and a
            ``forward(inputs, data_samples, mode='tensor')``), or a bare backbone.
        inputs: a preprocessed batch ``[B, C, H, W]``. Needed for realised (dynamic) figures; the
            backbone and the rest then run for real on it.
        img_shape: ``(H, W)`` for static figures without running the backbone. One of
            ``inputs`` / ``img_shape`` is required; with both, ``inputs`` wins.
        data_samples: the batch's data samples (mmdet's two-stage heads need their meta
            information); generated for ``inputs`` / ``img_shape`` when not given.
        backbone_only: count the backbone only.

    Returns:
        dict with (FLOPs per image, in MACs):
        ``img_shape``, ``batch_size``, ``params`` (counted part), ``params_breakdown``,
        ``flops`` (static), ``backbone_flops``, ``rest_flops``, ``backbone_method``
        (``'analytic' | 'traced'``), ``breakdown`` (``{'backbone.<name>': ..., '<child>': ...}``),
        ``is_dynamic``, ``flops_dynamic`` / ``backbone_flops_dynamic`` (``Tensor[B]`` float64, or
        None for static models or without ``inputs``), ``unsupported_ops`` (ops the tracer could
        not count).
    """
    model = unwrap_model(model)
    backbone = get_backbone(model)
    bare = backbone is model
    if bare:
        backbone_only = True
    img_shape, batch = _image_shape_and_batch(inputs, img_shape)
    device = _first_param_device(model)
    dyn_mods = find_dynamic_modules(backbone)
    unsupported: Counter = Counter()

    # ---- params
    params_breakdown = _params_breakdown(model, bare)
    params = params_breakdown.get('backbone', 0) if backbone_only else count_params(model)

    # ---- backbone, static
    b_static, b_break, method = _backbone_static(backbone, img_shape, device, dyn_mods,
                                                 unsupported)

    # ---- backbone, real run (realised figures and features for the rest)
    feats, b_dyn = None, None
    if inputs is not None and (dyn_mods or not backbone_only):
        feats, b_dyn = _run_backbone(backbone, inputs, dyn_mods, b_static, img_shape, batch)

    # ---- the rest
    rest_total, rest_break = 0., OrderedDict()
    if not backbone_only:
        if data_samples is None:
            data_samples = default_data_samples(model, batch, img_shape)
        rest_total, rest_break = _rest_of_model(model, backbone, feats, inputs, data_samples,
                                                img_shape, batch, device, unsupported)
    return _complexity_result(
        model, img_shape, batch, params, params_breakdown, (b_static, b_break, method),
        (rest_total, rest_break), b_dyn, unsupported)


def _backbone_static(backbone: nn.Module, img_shape, device, dyn_mods,
                     unsupported: Counter) -> Tuple[float, Dict[str, float], str]:
    """``(static FLOPs, breakdown, method)`` of the backbone: its analytic formulas when it
    has them, else traced (``'traced'``; untraceable ops added to ``unsupported``)."""
    b_static, b_break = backbone_static_flops(backbone, img_shape)
    if b_static is not None:
        return b_static, b_break, 'analytic'
    b_static, b_break = _traced_backbone_flops(backbone, img_shape, device, dyn_mods,
                                               unsupported)
    return b_static, b_break, 'traced'


def _complexity_result(model, img_shape, batch: int, params: int, params_breakdown: dict,
                       backbone: tuple, rest: tuple, b_dyn: Optional[torch.Tensor],
                       unsupported: Counter) -> Dict[str, Any]:
    """:func:`model_complexity`'s result dict from its parts: ``backbone`` is ``(static
    FLOPs, breakdown, method)``, ``rest`` ``(FLOPs, breakdown)``, ``b_dyn`` the backbone's
    realised FLOPs per image (or None)."""
    b_static, b_break, method = backbone
    rest_total, rest_break = rest
    breakdown = OrderedDict()
    breakdown['backbone'] = float(b_static)
    for k, v in b_break.items():
        breakdown[f'backbone.{k}'] = float(v)
    breakdown.update(rest_break)
    return dict(
        img_shape=img_shape,
        batch_size=batch,
        params=int(params),
        params_breakdown=dict(params_breakdown),
        flops=float(b_static) + rest_total,
        backbone_flops=float(b_static),
        rest_flops=float(rest_total),
        backbone_method=method,
        breakdown=breakdown,
        is_dynamic=bool(find_dynamic_modules(model)),
        flops_dynamic=None if b_dyn is None else b_dyn + rest_total,
        backbone_flops_dynamic=b_dyn,
        unsupported_ops=dict(unsupported),
    )


# ----------------------------------------------------------------------------- tools support
# Loading configs, building models and making batches, shared by
# tools/analysis_tools/get_flops.py and benchmark.py.
from mmdyn.utils.errors import UserError  # noqa: E402


class ConfigError(UserError, RuntimeError):
    """A config that cannot be loaded or whose model cannot be built (one-line message)."""


def _one_line(err: BaseException) -> str:
    msg = ' '.join(str(err).split())
    if msg.startswith("'") and msg.endswith("'"):  # KeyError quotes its message
        msg = msg[1:-1]
    return f'{type(err).__name__}: {msg}' if msg else type(err).__name__


def load_config(path: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile`` (``custom_imports`` honoured) plus ``--cfg-options``."""
    import os.path as osp

    from mmengine.config import Config
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f'cannot load config {path}: {_one_line(e)}') from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ConfigError(f'config {path} has no `model`')
    return cfg


def build_model_from_cfg(cfg, device: str = 'cpu', checkpoint: Optional[str] = None
                         ) -> nn.Module:
    """Build ``cfg.model`` in the config's default scope, in eval mode on ``device``, with
    SyncBN reverted to BN (single process). Weights are random unless ``checkpoint``."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get('default_scope', None)
    if scope:
        init_default_scope(scope)
    try:
        model = MODELS.build(cfg.model)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f'cannot build the model: {_one_line(e)}') from e
    model = revert_sync_batchnorm(model)
    if checkpoint is None:
        init_task_heads(model)
    else:
        # `not a readable checkpoint: FILE (why)`; weights of another model: one line too
        from mmdyn.utils.cli import load_checked_weights
        load_checked_weights(model, checkpoint)
    return model.to(device).eval()


def init_task_heads(model: nn.Module) -> None:
    """Initialise the model's task heads, its ``*head`` children (mmdet's ``rpn_head`` /
    ``roi_head`` / ``bbox_head``, mmseg's ``decode_head`` / ``auxiliary_head``, mmpretrain's
    ``head``), with their own ``init_weights``: a head may give meaningful outputs only
    after it (Sparse R-CNN's learned proposal boxes are no boxes at PyTorch's default
    initialisation). The backbone and the neck keep their construction-time weights.
    mmengine's per-parameter initialisation report (INFO) is not logged."""
    import logging

    from mmengine.logging import MMLogger
    heads = [child for name, child in model.named_children()
             if name.endswith('head') and callable(getattr(child, 'init_weights', None))]
    logger = MMLogger.get_current_instance()  # where mmengine reports initialisations

    def above_info(record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO

    logger.addFilter(above_info)
    try:
        for head in heads:
            head.init_weights()
    finally:
        logger.removeFilter(above_info)


def default_img_shape(cfg, model: nn.Module) -> Tuple[int, int]:
    """The usual test size of the model's task: the config's ``crop_size`` for mmseg (else
    512x512), 224x224 for mmpretrain (or the backbone's ``img_size``), 800x1333 for mmdet."""
    cb = _codebase(model)
    if cb == 'mmseg':
        crop = cfg.get('crop_size', None)
        if crop:
            return (int(crop[0]), int(crop[1]))
        return (512, 512)
    if cb == 'mmdet':
        return (800, 1333)
    size = getattr(get_backbone(model), 'img_size', None)
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return (224, 224)


def generated_images(num: int, shape: Sequence[int], seed: int = 0) -> List[torch.Tensor]:
    """``num`` deterministic ``uint8`` CHW test images of ``shape``: a smooth colour gradient
    with a few flat and textured rectangles (so that dynamic methods see both easy and hard
    regions)."""
    h, w = int(shape[0]), int(shape[1])
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, h).view(h, 1)
    xs = torch.linspace(0, 1, w).view(1, w)
    out = []
    for _ in range(num):
        c0, c1 = torch.rand(3, generator=g) * 255, torch.rand(3, generator=g) * 255
        a = torch.rand(1, generator=g).item()
        t = (a * ys + (1 - a) * xs).unsqueeze(0)
        img = c0.view(3, 1, 1) * (1 - t) + c1.view(3, 1, 1) * t
        for _ in range(int(torch.randint(2, 6, (1, ), generator=g))):
            y0 = int(torch.randint(0, max(1, h - h // 8), (1, ), generator=g))
            x0 = int(torch.randint(0, max(1, w - w // 8), (1, ), generator=g))
            y1 = min(h, y0 + max(1, int(torch.randint(h // 8, h // 2 + 2, (1, ), generator=g))))
            x1 = min(w, x0 + max(1, int(torch.randint(w // 8, w // 2 + 2, (1, ), generator=g))))
            colour = torch.rand(3, 1, 1, generator=g) * 255
            patch = colour.expand(3, y1 - y0, x1 - x0).clone()
            if torch.rand(1, generator=g).item() < 0.5:
                patch = patch + torch.randn(patch.shape, generator=g) * 40
            img[:, y0:y1, x0:x1] = patch
        out.append(img.clamp(0, 255).to(torch.uint8))
    return out


def generated_batch(model: nn.Module, shape: Sequence[int], batch_size: int = 1,
                    seed: int = 0) -> Tuple[torch.Tensor, Optional[list]]:
    """A batch of :func:`generated_images` through the model's data preprocessor (normalised,
    padded as the real pipeline would): ``(inputs, data_samples)``."""
    imgs = generated_images(batch_size, shape, seed)
    samples = default_data_samples(model, batch_size, shape)
    return preprocess(model, imgs, samples)


def preprocess(model: nn.Module, imgs: list, samples: Optional[list]
               ) -> Tuple[torch.Tensor, Optional[list]]:
    model = unwrap_model(model)
    pre = getattr(model, 'data_preprocessor', None)
    data = dict(inputs=imgs)
    if samples is not None:
        data['data_samples'] = samples
    if pre is None or not callable(pre):
        x = torch.stack(imgs).float().to(_first_param_device(model))
        return x, samples
    with torch.no_grad():
        data = pre(data, False)
    return data['inputs'], data.get('data_samples', samples)


def dataset_root(cfg) -> Optional[str]:
    """``data_root`` of the config's test (else val) dataset, or None when it names none."""
    for key in ('test_dataloader', 'val_dataloader'):
        dl = cfg.get(key, None)
        if not dl:
            continue
        ds = dl.get('dataset', {})
        while isinstance(ds, dict) and 'data_root' not in ds and 'dataset' in ds:
            ds = ds['dataset']  # wrappers (RepeatDataset, ...)
        if isinstance(ds, dict) and ds.get('data_root'):
            return ds['data_root']
    return None


def dataset_batches(cfg, model: nn.Module, num: int):
    """Yield up to ``num`` preprocessed single-image batches ``(inputs, data_samples)`` of the
    config's test (else val) dataloader."""
    from mmengine.runner import Runner
    key = 'test_dataloader' if cfg.get('test_dataloader', None) else 'val_dataloader'
    dl_cfg = copy.deepcopy(cfg[key])
    dl_cfg['batch_size'] = 1
    dl_cfg['num_workers'] = 0
    dl_cfg['persistent_workers'] = False
    dl_cfg.pop('prefetch_factor', None)
    loader = Runner.build_dataloader(dl_cfg)
    model = unwrap_model(model)
    for i, data in enumerate(loader):
        if i >= num:
            break
        with torch.no_grad():
            data = model.data_preprocessor(data, False)
        yield data['inputs'], data.get('data_samples', None)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything printed or logged to stdout (mmengine's logger included) to stderr, so a
    tool can print a single JSON object on stdout."""
    import logging
    import sys
    real = sys.stdout
    moved = []

    def retarget():
        from mmengine.logging import MMLogger
        loggers = [logging.getLogger()]
        if MMLogger.check_instance_created('mmengine'):
            loggers.append(MMLogger.get_instance('mmengine'))
        try:
            loggers.append(MMLogger.get_current_instance())
        except Exception:  # noqa: BLE001
            pass
        for lg in loggers:
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is real:
                    h.setStream(sys.stderr)
                    moved.append(h)

    retarget()
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield retarget
        finally:
            retarget()
            for h in moved:
                h.setStream(real)
