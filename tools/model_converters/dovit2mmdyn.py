"""Convert a DoViT segmentor checkpoint of the authors' code (FLHonker/DoViT-code) to mmdyn.

    python tools/model_converters/dovit2mmdyn.py SRC DST [--config CONFIG]

SRC: a ``DoEncoderDecoder`` checkpoint (``backbone.layers.*``, ``backbone.auxiliary_head.<k>.*``,
``decode_head.*``) or a ``DoViTDistiller`` one (the same under ``student.``; the teacher and the
unused ``generation.*`` are dropped). DST holds ``{'state_dict': ...}`` in the layout of
``mmdyn.DoViTEncoderDecoder`` (:func:`mmdyn.models.segmentors.dovit_official_to_mmdyn`). With
``--config`` the converted weights are loaded into that config's model and a missing or
unexpected key is an error (the position embedding is resized to the config's grid).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))


def main(argv=None):
    from mmdyn.models.segmentors.dovit_segmentor import (dovit_official_to_mmdyn,
                                                         load_segmentor_state_dict)
    from mmdyn.models.utils.ckpt_convert import load_checkpoint_file, save_converted
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--config', help='check the result against this config (strict)')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import build_model, conversion_errors, friendly_errors, load_config
    with friendly_errors('dovit2mmdyn.py'):  # one line for a bad SRC or --config
        cfg = load_config(args.config) if args.config else None
        with conversion_errors(args.src):
            sd = dovit_official_to_mmdyn(load_checkpoint_file(args.src))
        if cfg is not None:  # checked before anything is written
            cfg.model.backbone.init_cfg = None
            model = build_model(cfg)
            load_segmentor_state_dict(model, {'state_dict': sd}, strict=True,
                                      name=f'{args.src} converted')
        save_converted(sd, args.dst, 'DoViT-code', args.src)
        if cfg is not None:
            print(f'{args.dst}: every key of {osp.basename(args.config)} loaded, none left over')


if __name__ == '__main__':
    main()
