"""Convert a T2T-ViT ImageNet checkpoint to mmdyn's layout (static host or every DVT exit).

    python tools/model_converters/t2t2mmdyn.py SRC DST [--dvt-exits K] [--ema]

SRC: a checkpoint of the public T2T-ViT code (``tokens_to_token.attention1...``, ``blocks.N.attn.
qkv``, ``cls_token``, ``pos_embed``, ``head``; Performer or transformer token layers), of
mmpretrain's ``T2T_ViT`` (``tokens_to_token.attention1.ln1...``, ``encoder.N...``, with or
without its classifier's ``backbone.`` / ``head.layers.head.`` keys) or mmdyn's ``T2TViT``; the
layout is detected from the keys. ``--ema`` takes ``state_dict_ema`` of a timm training
checkpoint (what the public code's transfer learning loads).

DST holds ``{'state_dict': ...}``:

* default: an mmpretrain ``ImageClassifier`` with an ``mmdyn.T2TViT`` backbone and a
  ``VisionTransformerClsHead`` (the static configs ``configs/dvt/t2t-vit-*.py``):
  ``backbone.*`` and ``head.layers.head.*``;
* ``--dvt-exits K``: a K-exit T2T-host ``mmdyn.DVTClassifier``, every exit initialised from the
  same weights (``exits.k.backbone.*``, ``exits.k.head.fc.*``); the exits' own shapes (first
  soft split, FFN input widened by feature reuse) are fitted when the DVT model loads it
  (``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or SRC directly).

The T2T token layers of a ``'transformer'`` checkpoint need ``token_type='transformer'`` in the
config (mmpretrain's T2T-ViT_t models).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmdyn.models.backbones.t2t_vit import (_unwrap, detect_t2t_layout,  # noqa: E402
                                            t2t_to_mmdyn)
from mmdyn.models.classifiers.dvt import t2t_to_dvt_exits  # noqa: E402
from mmdyn.models.utils.ckpt_convert import load_checkpoint_file, save_converted  # noqa: E402


def convert(ckpt, dvt_exits: int = 0, use_ema: bool = False):
    """The converted state dict (see the module doc)."""
    if dvt_exits:
        return t2t_to_dvt_exits(ckpt, dvt_exits, use_ema=use_ema)
    out = {}
    for k, v in t2t_to_mmdyn(ckpt, use_ema=use_ema).items():
        if k.startswith('head.'):
            out['head.layers.head.' + k[len('head.'):]] = v
        else:
            out['backbone.' + k] = v
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--dvt-exits', type=int, default=0,
                        help='write a K-exit DVT state dict instead of a static classifier')
    parser.add_argument('--ema', action='store_true', help='use state_dict_ema if present')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('t2t2mmdyn.py'):  # one line for a bad SRC
        ckpt = load_checkpoint_file(args.src)
        layout = detect_t2t_layout(_unwrap(ckpt, args.ema))
        sd = convert(ckpt, args.dvt_exits, args.ema)
        save_converted(sd, args.dst, layout, args.src)
        return 0


if __name__ == '__main__':
    sys.exit(main())
