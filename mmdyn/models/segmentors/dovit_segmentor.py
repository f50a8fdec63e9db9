"""mmseg encoder-decoder for DoViT: auxiliary-head losses (Eq. 10) and self-distillation (Eq. 11).

The total training loss is Eq. 12, ``L = L_CE + alpha * L_AH + beta * L_SD``:

* ``L_CE``: the decode head's own loss (mmseg);
* ``L_AH``: cross-entropy of each DoViT auxiliary head (``backbone.aux_logits``, upsampled to the
  label size) against the ground truth, weight ``aux_loss_weight`` (alpha, default 1.0); any
  mmseg ``auxiliary_head`` of the config is trained as usual on top;
* ``L_SD``: pixel-wise KL divergence between the decode-head logits of a frozen teacher (the
  static ViT segmentor, run by :class:`mmdyn.SelfDistillationHook`, which sets
  ``self.distill_targets``) and the student's, weight beta (``distill_loss.loss_weight``,
  default 0.4). Nothing is added when ``distill_targets`` is ``None`` (no hook, or outside
  training).
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
from ..utils.ckpt_convert import load_checkpoint_file, vit_to_mmdyn

__all__ = ['DoViTEncoderDecoder', 'segmentor_to_mmdyn', 'load_segmentor_checkpoint']


def segmentor_to_mmdyn(ckpt) -> 'OrderedDict[str, torch.Tensor]':
    """Convert a whole mmseg ViT segmentor checkpoint (SETR naive/PUP/MLA, Segmenter: keys
    ``backbone.*`` in mmseg's ``VisionTransformer`` layout, or timm/DeiT/mmpretrain/mmdyn
    layouts) to the mmdyn layout: the backbone keys are converted with
    :func:`mmdyn.models.utils.ckpt_convert.vit_to_mmdyn`, the heads and the neck are kept."""
    sd = ckpt
    for key in ('state_dict', 'model'):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise TypeError(f'segmentor_to_mmdyn: no state dict in a {type(ckpt).__name__}')
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                     for k, v in sd.items() if isinstance(v, torch.Tensor))
    bb = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                     if k.startswith('backbone.'))
    if not bb:
        raise ValueError('segmentor_to_mmdyn: no key starts with "backbone."')
    out = OrderedDict(('backbone.' + k, v) for k, v in vit_to_mmdyn(bb).items())
    out.update((k, v) for k, v in sd.items() if not k.startswith('backbone.'))
    return out


def load_segmentor_checkpoint(model, filename: str) -> Tuple[list, list]:
    """Load a static mmseg/mmdyn ViT segmentor checkpoint into a (DoViT) segmentor: layout
    converted, position embedding resized to the model's grid; the DoViT auxiliary heads are
    the expected missing keys. Returns ``(missing_keys, unexpected_keys)``."""
    sd = segmentor_to_mmdyn(load_checkpoint_file(filename))
    adapt = getattr(model.backbone, '_adapt_state_dict', None)
    if adapt is not None:
        bb = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                         if k.startswith('backbone.'))
        bb = adapt(bb)
        sd = OrderedDict([(k, v) for k, v in sd.items() if not k.startswith('backbone.')] +
                         [('backbone.' + k, v) for k, v in bb.items()])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return list(missing), list(unexpected)


@MODELS.register_module()
class DoViTEncoderDecoder(EncoderDecoder):
    """Encoder-decoder whose backbone is a :class:`mmdyn.DoViT` (or any backbone exposing
    ``aux_logits``).

    Args:
        aux_loss_weight (float): alpha of Eq. 12 (each auxiliary head). Default 1.0.
        distill_loss (dict, optional): Arguments of :class:`mmdyn.PixelKLDistillLoss`
            (``temperature``, ``loss_weight`` = beta). Default ``dict(loss_weight=0.4)``.
            None disables distillation even when a hook supplies targets.
        **kwargs: :class:`mmseg.models.EncoderDecoder` arguments.
    """

    def __init__(self, *args, aux_loss_weight: float = 1.0,
                 distill_loss: Optional[dict] = dict(loss_weight=0.4), **kwargs):
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
        object.__setattr__(self, 'distill_targets', None)

    # ------------------------------------------------------------------ losses
    def dovit_aux_losses(self, data_samples) -> dict:
        """Eq. 10: CE of every auxiliary head of the last backbone forward vs. ground truth."""
        logits = getattr(self.backbone, 'aux_logits', None) or []
        if not logits or self.aux_loss_weight == 0:
            return {}
        label = self.decode_head._stack_batch_gt(data_samples).squeeze(1).long()
        ignore = self.decode_head.ignore_index
        losses = {}
        for k, lg in enumerate(logits):
            up = resize(lg, size=label.shape[-2:], mode='bilinear', align_corners=False)
            losses[f'dovit_aux_{k}.loss_ce'] = self.aux_loss_weight * F.cross_entropy(
                up, label, ignore_index=ignore)
        return losses

    def distill(self, seg_logits: torch.Tensor) -> dict:
        """Eq. 11 against ``self.distill_targets`` (teacher decode-head logits)."""
        targets = getattr(self, 'distill_targets', None)
        if targets is None or self.distill_loss is None:
            return {}
        if isinstance(targets, (list, tuple)):
            targets = targets[0]
        if not isinstance(targets, torch.Tensor) or targets.dim() != 4:
            raise TypeError('DoViTEncoderDecoder: distill_targets must be the teacher\'s '
                            "[B, K, h, w] logits (teacher_mode='tensor')")
        if targets.shape[-2:] != seg_logits.shape[-2:]:
            targets = resize(targets, size=seg_logits.shape[-2:], mode='bilinear',
                             align_corners=False)
        return {'distill.' + self.distill_loss.loss_name:
                self.distill_loss(seg_logits, targets)}

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        x = self.extract_feat(inputs)
        losses = dict()
        seg_logits = self.decode_head.forward(x)
        losses.update(add_prefix(self.decode_head.loss_by_feat(seg_logits, data_samples),
                                 'decode'))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        losses.update(self.dovit_aux_losses(data_samples))
        losses.update(self.distill(seg_logits))
        return losses
