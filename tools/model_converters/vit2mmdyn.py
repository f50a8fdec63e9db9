"""Convert a ViT / DeiT checkpoint to mmdyn's key layout.

    python tools/model_converters/vit2mmdyn.py SRC DST

SRC may be a timm / DeiT / official ViT checkpoint in timm names (``blocks.0.attn.qkv``...), an
mmseg or mmpretrain ``VisionTransformer`` state dict (a whole segmentor's or classifier's too: its
``backbone.`` keys are taken) or an mmdyn one; the layout is detected from the keys. DST holds
``{'state_dict': ...}`` loadable by ``mmdyn.ViT`` (``init_cfg=dict(type='Pretrained',
checkpoint=DST)``, which would also accept SRC directly). Classification heads and DeiT's
distillation token are dropped.
With ``--classifier`` DST is a whole mmpretrain ``ImageClassifier`` (``backbone.*`` and the
head as ``head.layers.head.*``, the DeiT configs' ``VisionTransformerClsHead``).
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmdyn.models.utils.ckpt_convert import (  # noqa: E402
    backbone_state_dict, classifier_head_keys, detect_vit_layout, load_checkpoint_file,
    save_converted, vit_to_mmdyn)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--classifier', action='store_true',
                        help='write a whole mmpretrain ImageClassifier (backbone and head)')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('vit2mmdyn.py'):  # one line for a bad SRC
        ckpt = load_checkpoint_file(args.src)
        layout = detect_vit_layout(backbone_state_dict(ckpt))
        sd = vit_to_mmdyn(ckpt)
        if args.classifier:
            sd = OrderedDict([(f'backbone.{k}', v) for k, v in sd.items()] +
                             list(classifier_head_keys(ckpt, 'vit').items()))
        save_converted(sd, args.dst, layout, args.src)


if __name__ == '__main__':
    main()
