"""Convert a PVT / PVTv2 checkpoint to mmdyn's key layout.

    python tools/model_converters/pvt2mmdyn.py SRC DST

SRC may be an official whai362/PVT checkpoint (v1 or v2), an mmdet
``PyramidVisionTransformer(V2)`` state dict (a whole detector's too: its ``backbone.`` keys are
taken) or an mmdyn one; the layout is detected from the keys. DST holds ``{'state_dict': ...}``
loadable by ``mmdyn.PVT`` / ``mmdyn.PVTv2`` (``init_cfg=dict(type='Pretrained', checkpoint=DST)``,
which would also accept SRC directly).
With ``--classifier`` DST is a whole mmpretrain ``ImageClassifier`` (``backbone.*`` and the
head as ``head.fc.*``, the PVT ImageNet configs' ``LinearClsHead``; PVT v1: its class token
kept as ``cls_token`` / ``cls_pos_embed``), e.g. an official whai362 classifier for
``configs/dge/pvt-s_4xb256_in1k-256px.py``.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmdyn.models.utils.ckpt_convert import (  # noqa: E402
    backbone_state_dict, classifier_head_keys, detect_pvt_layout, load_checkpoint_file,
    pvt_to_mmdyn, save_converted)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--classifier', action='store_true',
                        help='write a whole mmpretrain ImageClassifier (backbone and head)')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import friendly_errors
    with friendly_errors('pvt2mmdyn.py'):  # one line for a bad SRC
        ckpt = load_checkpoint_file(args.src)
        layout = detect_pvt_layout(backbone_state_dict(ckpt))
        sd = pvt_to_mmdyn(ckpt)
        if args.classifier:
            sd = OrderedDict([(f'backbone.{k}', v) for k, v in sd.items()] +
                             list(classifier_head_keys(ckpt, 'linear').items()))
        save_converted(sd, args.dst, layout, args.src)


if __name__ == '__main__':
    main()
