"""mmseg encoder-decoder for DoViT: auxiliary-head losses (Eq. 10) and self-distillation (Eq. 11).

The total training loss is Eq. 12, ``L = L_CE + alpha * L_AH + L_SD``:

* ``L_CE``: the decode head's own loss (mmseg);
* ``L_AH``: each DoViT auxiliary head's own mmseg loss (``loss_by_feat`` of the head on
  ``backbone.aux_logits``: the logits bilinearly resized to the label size, its ``loss_decode``,
  0.4 in the authors' configs), times ``aux_loss_weight`` (alpha, default 1.0); any mmseg
  ``auxiliary_head`` of the config is trained as usual on top;
* ``L_SD``: the pixel-wise KL divergence between the decode-head logits of a frozen teacher (the
  static ViT segmentor, run by :class:`mmdyn.SelfDistillationHook`, which sets
  ``self.distill_targets``) and the student's (``distill_loss``, weight 1.0 as in the authors'
  distiller; the paper's text gives beta = 0.4), plus, when the hook also hands over the
  teacher's backbone features (``teacher_features=('backbone',)``), the mean squared error
  between the last backbone feature maps (``feat_distill_loss``, weight 0.5, the authors').
  Nothing is added when ``distill_targets`` is ``None`` (no hook, or outside training).
"""
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.utils import add_prefix

from mmdyn.registry import MODELS
from ..losses.distill_loss import PixelKLDistillLoss
from ..utils.checks import check_loss_weight
from mmdyn.utils.checkpoint import unwrap_state_dict
from ..utils.ckpt_convert import load_checkpoint_file, vit_to_mmdyn

__all__ = ['DoViTEncoderDecoder', 'segmentor_to_mmdyn', 'load_segmentor_checkpoint',
           'dovit_official_to_mmdyn']


def dovit_official_to_mmdyn(ckpt) -> 'OrderedDict[str, torch.Tensor]':
    """Convert a whole segmentor checkpoint of the authors' DoViT code (FLHonker/DoViT-code,
    mmseg 0.x) to mmdyn's :class:`DoViTEncoderDecoder` layout.

    Accepted: a ``DoEncoderDecoder`` checkpoint (``backbone.layers.{i}.attn.qkv`` /
    ``ln1`` / ``ffn.layers``, final norm ``backbone.ln1``, auxiliary heads
    ``backbone.auxiliary_head.{k}.*``, ``decode_head.*``) and a ``DoViTDistiller`` checkpoint
    (the same under ``student.``; ``teacher.*`` and the distiller's unused ``generation.*``
    are dropped). The backbone is converted like any ViT checkpoint, the auxiliary heads move
    to ``backbone.aux_heads.{k}.*`` (mmseg heads: same names inside), the decode head is kept.
    """
    sd = unwrap_state_dict(ckpt)
    if any(k.startswith('student.') for k in sd):  # DoViTDistiller
        sd = OrderedDict((k[len('student.'):], v) for k, v in sd.items()
                         if k.startswith('student.'))
    aux = 'backbone.auxiliary_head.'
    heads = OrderedDict(('backbone.aux_heads.' + k[len(aux):], v) for k, v in sd.items()
                        if k.startswith(aux))
    if not heads:
        raise ValueError('dovit_official_to_mmdyn: no "backbone.auxiliary_head.<k>." keys: '
                         'not a DoViT segmentor checkpoint of the authors\' code')
    rest = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(aux))
    out = segmentor_to_mmdyn(rest)
    out.update(heads)
    return out


def segmentor_to_mmdyn(ckpt) -> 'OrderedDict[str, torch.Tensor]':
    """Convert a whole mmseg ViT segmentor checkpoint (SETR naive/PUP/MLA, Segmenter: keys
    ``backbone.*`` in mmseg's ``VisionTransformer`` layout, or timm/DeiT/mmpretrain/mmdyn
    layouts) to the mmdyn layout: the backbone keys are converted with
    :func:`mmdyn.models.utils.ckpt_convert.vit_to_mmdyn`, the heads and the neck are kept."""
    sd = unwrap_state_dict(ckpt)
    bb = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                     if k.startswith('backbone.'))
    if not bb:
        raise ValueError('segmentor_to_mmdyn: no key starts with "backbone."')
    out = OrderedDict(('backbone.' + k, v) for k, v in vit_to_mmdyn(bb).items())
    out.update((k, v) for k, v in sd.items() if not k.startswith('backbone.'))
    return out


def load_segmentor_checkpoint(model, filename: str, strict: bool = False) -> Tuple[list, list]:
    """Load a segmentor checkpoint into a (DoViT) segmentor: layout converted, position
    embedding resized to the model's grid. A static mmseg/mmdyn ViT segmentor's (the DoViT
    auxiliary heads are then the expected missing keys) or a DoViT one of the authors' code
    (:func:`dovit_official_to_mmdyn`, detected by its ``auxiliary_head`` keys). Returns
    ``(missing_keys, unexpected_keys)``; ``strict=True`` raises if either is not empty."""
    return load_segmentor_state_dict(model, load_checkpoint_file(filename), strict, filename)


def load_segmentor_state_dict(model, ckpt, strict: bool = False,
                              name: str = 'the state dict') -> Tuple[list, list]:
    """:func:`load_segmentor_checkpoint` of a checkpoint already in memory (``ckpt``: a state
    dict or a checkpoint dict holding one)."""
    if any('backbone.auxiliary_head.' in k for k in unwrap_state_dict(ckpt)):
        sd = dovit_official_to_mmdyn(ckpt)
    else:
        sd = segmentor_to_mmdyn(ckpt)
    adapt = getattr(model.backbone, '_adapt_state_dict', None)
    if adapt is not None:
        bb = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                         if k.startswith('backbone.'))
        bb = adapt(bb)
        sd = OrderedDict([(k, v) for k, v in sd.items() if not k.startswith('backbone.')] +
                         [('backbone.' + k, v) for k, v in bb.items()])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if strict and (missing or unexpected):
        from mmdyn.utils.errors import UserValueError
        raise UserValueError(f'{name} does not fit the model: missing keys {list(missing)}, '
                             f'unexpected keys {list(unexpected)}')
    return list(missing), list(unexpected)


@MODELS.register_module()
class DoViTEncoderDecoder(EncoderDecoder):
    """Encoder-decoder whose backbone is a :class:`mmdyn.DoViT` (or any backbone exposing
    ``aux_logits``).

    Args:
        aux_loss_weight (float): alpha of Eq. 12, a factor on every auxiliary head's own loss.
            Default 1.0 (the heads' ``loss_decode`` weights, 0.4 in the authors' configs).
        distill_loss (dict, optional): Arguments of :class:`mmdyn.PixelKLDistillLoss`
            (``temperature``, ``loss_weight``). Default ``dict(loss_weight=1.0)`` (the
            authors' distiller; the paper's beta is 0.4). None disables distillation even when
            a hook supplies targets.
        feat_distill_loss (dict, optional): ``dict(loss_weight=w)``: ``w * MSE`` between the
            student's and the teacher's last backbone feature maps (mean over elements), when
            the targets hold the teacher's features (:class:`mmdyn.SelfDistillationHook` with
            ``teacher_features=('backbone',)``). Default ``dict(loss_weight=0.5)`` (the
            authors'). None: no feature term.
        **kwargs: :class:`mmseg.models.EncoderDecoder` arguments.
    """

    def __init__(self, *args, aux_loss_weight: float = 1.0,
                 distill_loss: Optional[dict] = dict(loss_weight=1.0),
                 feat_distill_loss: Optional[dict] = dict(loss_weight=0.5), **kwargs):
        check_loss_weight(aux_loss_weight, 'aux_loss_weight', 'DoViTEncoderDecoder')
        # sub-modules with plain names (heads, data preprocessor) live in mmseg's registry
        with DefaultScope.overwrite_default_scope('mmseg'):
            super().__init__(*args, **kwargs)
        self.aux_loss_weight = float(aux_loss_weight)
        if distill_loss is not None:
            cfg = dict(distill_loss)
            t = cfg.pop('type', 'PixelKLDistillLoss')
            if t.split('.')[-1] != 'PixelKLDistillLoss':
                raise ValueError(f'distill_loss must be a PixelKLDistillLoss, got {t!r}')
            self.distill_loss = PixelKLDistillLoss(**cfg)
        else:
            self.distill_loss = None
        self.feat_distill_weight = None
        if feat_distill_loss is not None:
            cfg = dict(feat_distill_loss)
            if set(cfg) - {'loss_weight'}:
                raise ValueError(f'feat_distill_loss takes only loss_weight, got {cfg}')
            self.feat_distill_weight = float(cfg.get('loss_weight', 1.0))
        object.__setattr__(self, 'distill_targets', None)

    # ------------------------------------------------------------------ losses
    def dovit_aux_losses(self, data_samples) -> dict:
        """Eq. 10: every auxiliary head's own loss (``loss_by_feat``) on its logits of the last
        backbone forward, times ``aux_loss_weight``."""
        logits = getattr(self.backbone, 'aux_logits', None) or []
        if not logits or self.aux_loss_weight == 0:
            return {}
        losses = {}
        for k, lg in enumerate(logits):
            head = self.backbone.aux_heads[k]
            for name, v in head.loss_by_feat(lg, data_samples).items():
                if 'loss' in name and self.aux_loss_weight != 1.0:
                    v = self.aux_loss_weight * v
                losses[f'dovit_aux_{k}.{name}'] = v
        return losses

    def distill(self, seg_logits: torch.Tensor, feats=None) -> dict:
        """Eq. 11 against ``self.distill_targets``: the teacher's decode-head logits, or a dict
        ``{'outputs': logits, 'features': {'backbone': feats}}`` from a hook run with
        ``teacher_features=('backbone',)`` (then also the feature MSE on the last maps)."""
        targets = getattr(self, 'distill_targets', None)
        if targets is None:
            return {}
        teacher_feats = None
        if isinstance(targets, dict):
            teacher_feats = (targets.get('features') or {}).get('backbone')
            targets = targets.get('outputs')
        losses = {}
        if self.distill_loss is not None:
            if isinstance(targets, (list, tuple)):
                targets = targets[0]
            if not isinstance(targets, torch.Tensor) or targets.dim() != 4:
                raise TypeError('DoViTEncoderDecoder: distill_targets must be the teacher\'s '
                                "[B, K, h, w] logits (teacher_mode='tensor')")
            if targets.shape[-2:] != seg_logits.shape[-2:]:
                targets = resize(targets, size=seg_logits.shape[-2:], mode='bilinear',
                                 align_corners=False)
            losses['distill.' + self.distill_loss.loss_name] = self.distill_loss(
                seg_logits, targets)
        if self.feat_distill_weight is not None and teacher_feats is not None \
                and feats is not None:
            f_t = teacher_feats[-1] if isinstance(teacher_feats, (list, tuple)) \
                else teacher_feats
            f_s = feats[-1] if isinstance(feats, (list, tuple)) else feats
            if f_s.shape != f_t.shape:
                raise ValueError(f'DoViTEncoderDecoder: student feature {tuple(f_s.shape)} and '
                                 f'teacher feature {tuple(f_t.shape)} differ')
            losses['distill.loss_feat'] = self.feat_distill_weight * F.mse_loss(
                f_s, f_t.detach().to(f_s.dtype))
        return losses

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        feats = self.backbone(inputs)
        x = self.neck(feats) if self.with_neck else feats
        losses = dict()
        seg_logits = self.decode_head.forward(x)
        losses.update(add_prefix(self.decode_head.loss_by_feat(seg_logits, data_samples),
                                 'decode'))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        losses.update(self.dovit_aux_losses(data_samples))
        losses.update(self.distill(seg_logits, feats))
        return losses
