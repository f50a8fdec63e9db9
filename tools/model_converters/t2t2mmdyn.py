"""Convert a T2T-ViT or a public DVT checkpoint to mmdyn's layout.

    python tools/model_converters/t2t2mmdyn.py SRC DST [--dvt-exits K] [--ema]
        [--thresholds-out JSON --budget-level P]

SRC, detected from the keys:

* a checkpoint of the **public DVT code** (blackfeather-wang/Dynamic-Vision-Transformer: the
  released ``DVT_T2t_vit_12``, ``DVT_T2t_vit_14`` and ``DVT_Deit_small`` files, i.e.
  ``model_state_dict`` with one module per exit, ``less_less_token.*`` / ``less_token.*`` /
  ``normal_token.*``, T2T-ViT or DeiT hosts, with their ``feature_resuse_mlp`` and
  ``relation_reuse_conv`` modules): converted whole by
  :func:`mmdyn.models.classifiers.dvt.dvt_official_to_mmdyn` (every tensor used but the T2T
  exits' fixed sinusoidal position tables; anything unrecognised is an error). DST holds
  ``exits.k.*`` keys for the matching ``mmdyn.DVTClassifier`` config (``--dvt-exits``, if given,
  must be the checkpoint's number of exits, 3 for the released files: a model without the
  middle exit would not be the authors'). ``--thresholds-out`` writes the
  checkpoint's confidence thresholds of budget level ``--budget-level P`` (1..59, its
  ``dynamic_threshold[P - 1]``) as the JSON the DVT configs read (``model.thresholds_file``),
  see :func:`mmdyn.models.classifiers.dvt.official_thresholds`;
* a **T2T-ViT**: the public T2T-ViT code's (``tokens_to_token.attention1...``,
  ``blocks.N.attn.qkv``, ``cls_token``, ``pos_embed``, ``head``; Performer or transformer token
  layers; ``--ema`` takes ``state_dict_ema`` of a timm training checkpoint, and is refused for a
  checkpoint without one), mmpretrain's
  ``T2T_ViT`` (``tokens_to_token.attention1.ln1...``, ``encoder.N...``, with or without its
  classifier's ``backbone.`` / ``head.layers.head.`` keys) or mmdyn's ``T2TViT``. DST holds:

  * default: an mmpretrain ``ImageClassifier`` with an ``mmdyn.T2TViT`` backbone and a
    ``VisionTransformerClsHead`` (the static configs ``configs/dvt/t2t-vit-*.py``):
    ``backbone.*`` and ``head.layers.head.*``;
  * ``--dvt-exits K``: a K-exit T2T-host ``mmdyn.DVTClassifier``, every exit initialised from
    the same weights (``exits.k.backbone.*``, ``exits.k.head.fc.*``); the exits' own shapes
    (first soft split, FFN input widened by feature reuse) are fitted when the DVT model loads
    it (``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or SRC directly).

  The T2T token layers of a ``'transformer'`` checkpoint need ``token_type='transformer'`` in
  the config (mmpretrain's T2T-ViT_t models).

DST is ``{'state_dict': ..., 'meta': {'converted_from': layout}}``.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmdyn.models.backbones.t2t_vit import detect_t2t_layout, t2t_to_mmdyn  # noqa: E402
from mmdyn.models.classifiers.dvt import (dvt_official_to_mmdyn, is_official_dvt,  # noqa: E402
                                          official_thresholds, t2t_to_dvt_exits)
from mmdyn.models.utils.ckpt_convert import load_checkpoint_file, save_converted  # noqa: E402
from mmdyn.utils.checkpoint import unwrap_state_dict  # noqa: E402


def convert(ckpt, dvt_exits: int = 0, use_ema: bool = False):
    """The converted state dict (see the module doc)."""
    if is_official_dvt(ckpt):
        return dvt_official_to_mmdyn(ckpt, dvt_exits or None)
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
                        help='T2T-ViT source: write a K-exit DVT state dict instead of a static '
                        'classifier; public DVT source: its number of exits (default: all)')
    parser.add_argument('--ema', action='store_true',
                        help='T2T-ViT source: convert its state_dict_ema (timm\'s EMA weights); '
                        'an error when SRC has none')
    parser.add_argument('--thresholds-out', help='public DVT source: write the thresholds of '
                        '--budget-level to this JSON (a DVT config\'s thresholds_file)')
    parser.add_argument('--budget-level', type=int, default=None,
                        help='budget level 1..59 of the public checkpoint\'s dynamic_threshold')
    args = parser.parse_args(argv)
    if args.dvt_exits and args.dvt_exits < 2:
        parser.error(f'--dvt-exits must be >= 2 (a DVT model has 2 exits or more), got '
                     f'{args.dvt_exits}')
    if args.thresholds_out and args.budget_level is None:
        parser.error('--thresholds-out needs --budget-level')
    if args.budget_level is not None and not args.thresholds_out:
        parser.error('--budget-level is read only with --thresholds-out')
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('t2t2mmdyn.py'):  # one line for a bad SRC
        ckpt = load_checkpoint_file(args.src)
        has_ema = isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict_ema'), dict)
        if is_official_dvt(ckpt):
            if args.ema:
                parser.error('--ema: a public DVT checkpoint holds one set of weights '
                             '(model_state_dict), no EMA')
            layout = 'dvt-official'
        else:
            if args.thresholds_out:
                parser.error('--thresholds-out needs a public DVT checkpoint')
            if args.ema and not has_ema:
                parser.error(f'--ema: {args.src} has no state_dict_ema (keys: '
                             f'{sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt)})')
            layout = detect_t2t_layout(unwrap_state_dict(ckpt, use_ema=args.ema))
        sd = convert(ckpt, args.dvt_exits, args.ema)
        th = None
        if args.thresholds_out:  # checked before anything is written
            num_exits = len({k.split('.')[1] for k in sd if k.startswith('exits.')})
            th = official_thresholds(ckpt, args.budget_level, num_exits)
        save_converted(sd, args.dst, layout, args.src)
    if args.thresholds_out:
        if osp.dirname(args.thresholds_out):
            os.makedirs(osp.dirname(args.thresholds_out), exist_ok=True)
        res = dict(thresholds=th, budget_level=args.budget_level, source=args.src)
        if isinstance(ckpt, dict) and 'flops' in ckpt:
            res['public_cumulative_gflops'] = [float(f) for f in ckpt['flops']]
        with open(args.thresholds_out, 'w') as f:
            json.dump(res, f, indent=2)
        print(f'thresholds {th} (budget level {args.budget_level}) -> {args.thresholds_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
