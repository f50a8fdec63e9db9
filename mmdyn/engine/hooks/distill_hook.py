"""Self-distillation of a dynamic model from a frozen teacher.

The distillation protocol
-------------------------
Before every training iteration :class:`SelfDistillationHook`

1. runs the student's data preprocessor on the batch (``training=True``), and by default makes the
   student's own ``train_step`` reuse exactly that result (``share_preprocessed``), so that random
   batch augmentations cannot make teacher and student see different inputs;
2. runs the teacher on it under ``torch.no_grad()``, in ``teacher_mode`` (default ``'tensor'``:
   for an mmseg / mmdet / mmpretrain model that is ``model._forward(inputs, data_samples)``,
   the raw head outputs: segmentation logits, detection head maps, class scores);
3. stores these outputs on the unwrapped student as the attribute ``distill_targets`` (and on
   the sub-modules named in ``target_modules``, e.g. ``'decode_head'``). With
   ``teacher_features`` (dotted names of teacher sub-modules, e.g. ``('backbone',)``) the
   targets are ``{'outputs': outputs, 'features': {name: that sub-module's output}}``.

**Student losses read** ``self.distill_targets``: a model (or head) that supports distillation
checks ``getattr(self, 'distill_targets', None)`` in its ``loss`` and, when it is not ``None``,
adds its distillation term against it. After the iteration the hook sets ``distill_targets`` back
to ``None``; outside training it is ``None``.

The teacher is either

* a separate frozen model, built from ``teacher_cfg`` (a config file, a full config with a
  ``model`` key, or a model config dict; ``custom_imports`` and ``default_scope`` of a config
  file are honoured) and loaded from ``teacher_checkpoint``. It is kept on the hook, not on the
  student: it is in no optimizer, no checkpoint and no DDP wrapper, gets no gradient and is
  always in eval mode. By default it receives the student's preprocessed inputs; set
  ``use_teacher_preprocessor=True`` when it was trained with another normalisation.
* or, with ``self_teacher=True``, the student itself with every gate on
  (:func:`mmdyn.models.utils.full_compute`), in eval mode (``teacher_eval``; every module's own
  train/eval flag is put back afterwards) and without gradients: the static network with the
  student's current weights teaches the dynamic one.
"""
import contextlib
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.registry import MODELS, DefaultScope

from mmdyn.models.utils.dynamic import full_compute
from mmdyn.models.utils.dynamic import unwrap_model as _unwrap
from mmdyn.registry import HOOKS

TARGET_ATTR = 'distill_targets'


def _run(model, data, mode):
    if isinstance(data, dict):
        return model(**data, mode=mode)
    if isinstance(data, (list, tuple)):
        return model(*data, mode=mode)
    raise TypeError(f'SelfDistillationHook: unexpected preprocessed data of type {type(data)}')


def build_teacher(teacher_cfg, teacher_checkpoint: Optional[str] = None,
                  strict: bool = False, map_location='cpu') -> nn.Module:
    """Build a frozen teacher from a config (path, full config or model dict) and checkpoint."""
    if isinstance(teacher_cfg, nn.Module):
        teacher = teacher_cfg
    else:
        scope = None
        cfg = teacher_cfg
        if isinstance(cfg, str):
            cfg = Config.fromfile(cfg)  # runs custom_imports
        if isinstance(cfg, (dict, Config, ConfigDict)) and 'type' not in cfg and 'model' in cfg:
            scope = cfg.get('default_scope', None)
            cfg = cfg['model']
        if not isinstance(cfg, (dict, ConfigDict)) or 'type' not in cfg:
            raise ValueError('SelfDistillationHook: teacher_cfg must be a config file, a config '
                             f"with a 'model' key or a model dict with 'type', got {teacher_cfg!r}")
        if scope is not None:
            with DefaultScope.overwrite_default_scope(scope):
                teacher = MODELS.build(cfg)
        else:
            teacher = MODELS.build(cfg)
    if teacher_checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(teacher, teacher_checkpoint, map_location=map_location, strict=strict,
                        revise_keys=[(r'^module\.', '')])
    elif hasattr(teacher, 'init_weights') and not isinstance(teacher_cfg, nn.Module):
        teacher.init_weights()
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@HOOKS.register_module()
class SelfDistillationHook(Hook):
    """Run a frozen teacher on each training batch and hand its outputs to the student's loss.

    Args:
        teacher_cfg (str | dict | Config | nn.Module, optional): the separate teacher.
        teacher_checkpoint (str, optional): its weights (``state_dict`` or a bare state dict).
        self_teacher (bool): use the student with every gate on as the teacher.
        teacher_mode (str): the ``mode`` the teacher is run in. Defaults to ``'tensor'``.
        target_modules (sequence of str): dotted names of the student's sub-modules that receive
            ``distill_targets`` (``''`` is the model itself). Defaults to ``('',)``.
        share_preprocessed (bool): make the student's ``train_step`` reuse the batch the hook
            preprocessed for the teacher. Defaults to True.
        use_teacher_preprocessor (bool): feed a separate teacher through its own data
            preprocessor (on the raw batch) instead of the student's. Defaults to False.
        teacher_eval (bool): run the self-teacher in eval mode. Defaults to True.
        strict (bool): strict loading of the teacher checkpoint. Defaults to False.
        teacher_features (sequence of str): teacher sub-modules whose outputs of the teacher
            run are handed over too (see the module docstring). Defaults to ``()``.
    """

    priority = 'NORMAL'

    def __init__(self,
                 teacher_cfg: Union[str, dict, Config, nn.Module, None] = None,
                 teacher_checkpoint: Optional[str] = None,
                 self_teacher: bool = False,
                 teacher_mode: str = 'tensor',
                 target_modules: Sequence[str] = ('', ),
                 share_preprocessed: bool = True,
                 use_teacher_preprocessor: bool = False,
                 teacher_eval: bool = True,
                 strict: bool = False,
                 teacher_features: Sequence[str] = ()) -> None:
        if self_teacher and teacher_cfg is not None:
            raise ValueError('SelfDistillationHook: give either teacher_cfg or '
                             'self_teacher=True, not both')
        if not self_teacher and teacher_cfg is None:
            raise ValueError('SelfDistillationHook: a teacher is needed: teacher_cfg (and '
                             'teacher_checkpoint) or self_teacher=True')
        if self_teacher and teacher_checkpoint is not None:
            raise ValueError('SelfDistillationHook: teacher_checkpoint is for a separate '
                             'teacher; the self-teacher uses the student weights')
        if self_teacher and use_teacher_preprocessor:
            raise ValueError('SelfDistillationHook: use_teacher_preprocessor needs a separate '
                             'teacher')
        if isinstance(target_modules, str):
            target_modules = (target_modules, )
        self.teacher_cfg = teacher_cfg
        self.teacher_checkpoint = teacher_checkpoint
        self.self_teacher = self_teacher
        self.teacher_mode = teacher_mode
        self.target_modules = tuple(target_modules)
        self.share_preprocessed = share_preprocessed
        self.use_teacher_preprocessor = use_teacher_preprocessor
        self.teacher_eval = teacher_eval
        self.strict = strict
        if isinstance(teacher_features, str):
            teacher_features = (teacher_features, )
        self.teacher_features = tuple(teacher_features)
        self.teacher: Optional[nn.Module] = None
        self._patched = None

    # -- helpers --------------------------------------------------------------------------------
    def _targets(self, model):
        mods = []
        for name in self.target_modules:
            try:
                mods.append(model.get_submodule(name) if name else model)
            except AttributeError as e:
                raise AttributeError(f"SelfDistillationHook: target module '{name}' does not "
                                     f'exist in {type(model).__name__}') from e
        return mods

    def _set_targets(self, model, value) -> None:
        for m in self._targets(model):
            object.__setattr__(m, TARGET_ATTR, value)

    def _autocast(self, runner, model):
        from mmengine.optim import AmpOptimWrapper
        ow = getattr(runner, 'optim_wrapper', None)
        if isinstance(ow, AmpOptimWrapper):
            return ow.optim_context(model)
        return contextlib.nullcontext()

    def _unpatch(self) -> None:
        if self._patched is not None:
            dp = self._patched
            self._patched = None
            if 'forward' in dp.__dict__:
                del dp.__dict__['forward']

    def run_teacher(self, model: nn.Module, data):
        """Teacher outputs for an already preprocessed batch (``model`` unwrapped), with the
        ``teacher_features`` when asked for."""
        if not self.teacher_features:
            return self._run_teacher(model, data)
        net = model if self.self_teacher else self.teacher
        feats, handles = {}, []
        for name in self.teacher_features:
            try:
                mod = net.get_submodule(name) if name else net
            except AttributeError as e:
                raise AttributeError(f"SelfDistillationHook: teacher module '{name}' does not "
                                     f'exist in {type(net).__name__}') from e

            def grab(_m, _i, out, name=name):
                feats[name] = out
            handles.append(mod.register_forward_hook(grab))
        try:
            outputs = self._run_teacher(model, data)
        finally:
            for h in handles:
                h.remove()
        return {'outputs': outputs, 'features': feats}

    def _run_teacher(self, model: nn.Module, data):
        if self.self_teacher:
            flags = [(m, m.training) for m in model.modules()]
            if self.teacher_eval:
                model.eval()
            try:
                with torch.no_grad(), full_compute(model):
                    return _run(model, data, self.teacher_mode)
            finally:
                for m, flag in flags:
                    m.training = flag
        self.teacher.eval()
        with torch.no_grad():
            return _run(self.teacher, data, self.teacher_mode)

    # -- hook points ----------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        self._set_targets(_unwrap(runner.model), None)

    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        self._targets(model)  # fail early on a wrong name
        if not self.self_teacher and self.teacher is None:
            self.teacher = build_teacher(self.teacher_cfg, self.teacher_checkpoint, self.strict)
            param = next(model.parameters(), None)
            if param is not None:
                self.teacher.to(param.device)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = _unwrap(runner.model)
        data = model.data_preprocessor(data_batch, True)
        if self.share_preprocessed:
            dp = model.data_preprocessor

            def reuse_once(*args, **kwargs):
                self._unpatch()
                return data

            # An instance attribute shadows the class's forward for the next call only.
            dp.__dict__['forward'] = reuse_once
            self._patched = dp
        teacher_data = data
        if self.use_teacher_preprocessor:
            teacher_data = self.teacher.data_preprocessor(data_batch, False)
        with self._autocast(runner, model):
            outputs = self.run_teacher(model, teacher_data)
        self._set_targets(model, outputs)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._unpatch()
        self._set_targets(_unwrap(runner.model), None)

    def after_train(self, runner) -> None:
        self._unpatch()
        self._set_targets(_unwrap(runner.model), None)
