"""Convert a DGE checkpoint of the authors' code (StevenGrove/vtpack) to mmdyn, whole.

    python tools/model_converters/dge2mmdyn.py SRC DST [--classifier]

SRC: a vtpack DGE-PVT (``pvt_dge_s124_*``) or DGE-DeiT (``deit_dge_s124_*``) checkpoint, as
its ``main.py`` saves it (``{'model': ...}``) or as its ``tools/export_model.py`` writes it
(keys prefixed ``backbone.bottom_up.model.``). Every tensor is converted: the host's weights
(PVT: the class token and its position become ``cls_token`` / ``cls_pos_embed``), the gates
(``...dge.router.gate.*`` -> ``dge.{stage}.{block}.gate.proj.*`` / ``dge.{block}.gate.proj.*``,
rows in mmdyn's gate order). vtpack's non-trainable ``dge.splits`` (the split counts per region
side, the same in every layer) are dropped, with a note giving the granularities they mean.

The result is checked against a model built from the checkpoint's own shapes
(``mmdyn.DGEPVT(cls_token=True)`` / ``mmdyn.DGEViT``): a missing or unexpected key, or a shape
that does not fit, is an error.

DST holds ``{'state_dict': ...}``: the backbone (loadable through ``init_cfg=dict(type=
'Pretrained', checkpoint=DST)``), or with ``--classifier`` a whole mmpretrain
``ImageClassifier`` (``backbone.*`` plus the head: ``head.fc.*`` for the PVT configs'
``LinearClsHead``, ``head.layers.head.*`` for the DeiT configs' ``VisionTransformerClsHead``),
loadable with ``tools/test.py CONFIG DST``.
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmdyn.models.utils.ckpt_convert import (  # noqa: E402
    backbone_state_dict, classifier_head_keys, dge_granularities, load_checkpoint_file,
    pvt_to_mmdyn, save_converted, vit_to_mmdyn)


def detect_host(sd) -> str:
    """``'pvt'`` (vtpack's DGE-PVT) or ``'deit'`` (its DGE-DeiT); an error for anything else."""
    if not any('.dge.router.gate.' in k for k in sd):
        raise ValueError('not a vtpack DGE checkpoint: no "...dge.router.gate.*" key; first '
                         f'keys: {list(sd)[:5]} (static hosts: pvt2mmdyn.py / vit2mmdyn.py)')
    if any(re.match(r'patch_embed\d+\.', k) for k in sd):
        return 'pvt'
    if any(k.startswith('blocks.') for k in sd):
        return 'deit'
    raise ValueError(f'unrecognised vtpack DGE host; first keys: {list(sd)[:5]}')


def build_reference(sd, host: str):
    """An mmdyn model with the checkpoint's shapes (head counts do not show in the weights and
    are irrelevant to the key check: one head per stage)."""
    from mmdyn.models.backbones.dge import DGEPVT, DGEViT
    phi = dge_granularities(sd)[0]
    if host == 'pvt':
        n = max(int(m.group(1)) for k in sd for m in [re.match(r'patch_embed(\d+)\.', k)] if m)
        dims, depths, mlp, srs, patches = [], [], [], [], []
        for s in range(1, n + 1):
            w = sd[f'patch_embed{s}.proj.weight']
            dims.append(w.shape[0])
            patches.append(w.shape[-1])
            depths.append(len({m.group(1) for k in sd
                                for m in [re.match(rf'block{s}\.(\d+)\.', k)] if m}))
            mlp.append(sd[f'block{s}.0.mlp.fc1.weight'].shape[0] / dims[-1])
            sr = sd.get(f'block{s}.0.attn.sr.weight')
            srs.append(1 if sr is None else sr.shape[-1])
        side = int(round(sd['pos_embed1'].shape[1] ** 0.5))
        arch = dict(embed_dims=dims, depths=depths, num_heads=[1] * n, mlp_ratios=mlp,
                    sr_ratios=srs)
        return DGEPVT(arch=arch, patch_sizes=patches, pretrain_img_size=side * patches[0],
                      granularities=phi, cls_token='cls_token' in sd)
    c = sd['cls_token'].shape[-1]
    depth = len({m.group(1) for k in sd for m in [re.match(r'blocks\.(\d+)\.', k)] if m})
    p = sd['patch_embed.proj.weight'].shape[-1]
    side = int(round((sd['pos_embed'].shape[1] - 1) ** 0.5))
    arch = dict(embed_dims=c, depth=depth, num_heads=1,
                mlp_ratio=sd['blocks.0.mlp.fc1.weight'].shape[0] / c)
    return DGEViT(arch=arch, img_size=side * p, patch_size=p, granularities=phi)


def convert(ckpt, classifier: bool = False):
    """``(state_dict, host, note)``; raises on any key that does not convert or fit."""
    sd = backbone_state_dict(ckpt)
    host = detect_host(sd)
    phi = dge_granularities(sd)
    splits = [k for k in sd if k.endswith('.dge.splits')]
    out = (pvt_to_mmdyn if host == 'pvt' else vit_to_mmdyn)(sd)
    model = build_reference(sd, host)
    missing, unexpected = model.load_state_dict(out, strict=False)
    if missing or unexpected:
        raise ValueError(f'vtpack {host} checkpoint does not convert whole: missing keys '
                         f'{list(missing)}, unexpected keys {list(unexpected)}')
    model.load_state_dict(out, strict=True)  # shapes
    note = (f'dropped {len(splits)} non-trainable dge.splits tensors (every layer: '
            f'{tuple(sd[splits[0]].tolist())} splits per region side = granularities '
            f'Phi={phi[0]})')
    if classifier:
        head = classifier_head_keys(sd, 'linear' if host == 'pvt' else 'vit')
        out = OrderedDict([(f'backbone.{k}', v) for k, v in out.items()] + list(head.items()))
    return out, host, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='vtpack DGE checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--classifier', action='store_true',
                        help='write a whole mmpretrain ImageClassifier (backbone and head)')
    args = parser.parse_args(argv)
    from mmdyn.utils.cli import conversion_errors, friendly_errors
    with friendly_errors('dge2mmdyn.py'):  # one line for a bad SRC
        with conversion_errors(args.src):
            sd, host, note = convert(load_checkpoint_file(args.src), args.classifier)
        print(note)
        save_converted(sd, args.dst, f'vtpack-dge-{host}', args.src)


if __name__ == '__main__':
    main()
