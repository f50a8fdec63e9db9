"""Checkpoint key conversion into mmdyn's layouts, with the source layout detected from the keys.

mmdyn layouts
-------------
PVT / PVTv2 (:class:`mmdyn.models.backbones.PVT`, ``PVTv2``)::

    stages.{i}.patch_embed.projection.{weight,bias}   stages.{i}.patch_embed.norm.*
    stages.{i}.pos_embed                              (PVT v1 only, [1, h*w, C])
    stages.{i}.blocks.{j}.norm1.* / norm2.*
    stages.{i}.blocks.{j}.attn.{q,kv,proj}.*          attn.sr.*  attn.norm.*
    stages.{i}.blocks.{j}.ffn.{fc1,dwconv,fc2}.*      (dwconv: PVTv2 only)
    stages.{i}.norm.*                                 (per-stage norm, when the model has one)

ViT / DeiT (:class:`mmdyn.models.backbones.ViT`)::

    cls_token  pos_embed  patch_embed.projection.*  pre_norm.*
    blocks.{j}.norm1.* / norm2.*  blocks.{j}.attn.{q,kv,proj}.*  blocks.{j}.ffn.{fc1,fc2}.*
    norm.*  (final norm)

Recognised sources
------------------
* PVT: the official whai362/PVT v1 and v2 checkpoints (``patch_embed1.proj``,
  ``block1.0.attn.q``, ``attn.kv``, ``mlp.dwconv.dwconv``, ``norm1``..``norm4``, ``pos_embed1``,
  ``cls_token``, ``head``), mmdet's ``PyramidVisionTransformer(V2)`` (``layers.{i}.0.projection``,
  ``layers.{i}.1.{k}.attn.attn.in_proj_weight``, ``ffn.layers.{0,1,3,4}`` 1x1 convs,
  ``layers.{i}.1.0.pos_embed``, ``layers.{i}.2``), and mmdyn's own.
* ViT: timm / DeiT (``blocks.0.attn.qkv``, ``mlp.fc1``, ``norm``, ``head``, ``dist_token``),
  mmseg's ``VisionTransformer`` (``layers.0.ln1``, ``attn.attn.in_proj_weight``,
  ``ffn.layers.0.0``, ``ln1``/``ln0``), mmpretrain's (``layers.0.attn.qkv``, ``ln1``,
  ``pre_norm``), and mmdyn's own.

* DGE (StevenGrove/vtpack): DGE-PVT (``block1.0.dge.router.gate.weight``...) and DGE-DeiT
  (``blocks.0.dge.router.gate.*``, separate ``attn.q`` / ``attn.kv``, ``mlp.fc1``) checkpoints,
  also as ``tools/export_model.py`` writes them (prefix ``backbone.bottom_up.model.``). The gates
  become ``dge.{stage}.{block}.gate.proj.*`` (PVT) / ``dge.{block}.gate.proj.*`` (DeiT), their
  rows in mmdyn's gate order (finest granularity first); the non-trainable ``dge.splits``
  tensors (vtpack's split counts per region side, ``phi = S / split``) are dropped and only
  checked to be the same in every layer (:func:`dge_granularities` reads them).

Checkpoints wrapped in ``state_dict`` / ``model`` / ``module`` and keys prefixed ``module.`` or
``backbone.`` (a whole detector, segmentor or classifier) are unwrapped first.
Classification heads and DeiT's distillation token are dropped (:func:`classifier_head_keys`
converts the heads); the PVT v1 class token becomes ``cls_token`` / ``cls_pos_embed``.
"""
import functools
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from mmdyn.utils.checkpoint import unwrap_state_dict
from mmdyn.utils.errors import UserValueError

__all__ = [
    'unwrap_state_dict', 'backbone_state_dict', 'detect_pvt_layout', 'pvt_to_mmdyn',
    'detect_vit_layout', 'vit_to_mmdyn', 'load_checkpoint_file', 'find_pretrained_cfg',
    'load_converted', 'save_converted', 'pretrained_init_cfg', 'apply_init_cfg',
    'split_dge_gates', 'dge_granularities', 'classifier_head_keys'
]

StateDict = Dict[str, torch.Tensor]


def save_converted(state_dict: StateDict, dst: str, layout: str, src: str = '?') -> None:
    """Write a converted state dict as ``{'state_dict', 'meta': {'converted_from': layout}}``
    (the converters in ``tools/model_converters``; parent folders are created) and say so."""
    import os
    import os.path as osp
    if osp.isdir(dst):
        from mmdyn.utils.errors import UserValueError
        raise UserValueError(f'{dst} is a directory, not a file to write')
    if osp.dirname(dst):
        os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.save({'state_dict': state_dict, 'meta': {'converted_from': layout}}, dst)
    print(f'{src} ({layout} layout, {len(state_dict)} tensors) -> {dst}')


def load_checkpoint_file(filename: str, logger=None):
    """Load a checkpoint: local files with ``torch.load(weights_only=True)`` (mmengine's classes
    allow-listed in :mod:`mmdyn.utils.checkpoint`, the one place to extend); a file that cannot
    be read that way (truncated, not a checkpoint, or pickling another class) is an
    :class:`~mmdyn.utils.errors.UnreadableCheckpoint` naming the file and the class.
    Anything else (URLs, ``open-mmlab://``...) goes through mmengine's ``CheckpointLoader``."""
    from mmdyn.utils.checkpoint import read_checkpoint
    return read_checkpoint(filename, map_location='cpu')


def backbone_state_dict(ckpt) -> StateDict:
    """The backbone tensors of a checkpoint (:func:`~mmdyn.utils.checkpoint.unwrap_state_dict`):
    of a whole detector, segmentor or classifier the keys under ``backbone.``, of vtpack's
    ``export_model.py`` files those under ``bottom_up.model.``, both without the prefix."""
    sd = unwrap_state_dict(ckpt)
    if any(k.startswith('backbone.') for k in sd):
        sd = unwrap_state_dict(sd, prefix='backbone.')
    if sd and all(k.startswith('bottom_up.model.') for k in sd):  # vtpack's export_model.py
        sd = unwrap_state_dict(sd, prefix='bottom_up.model.')
    return sd


# --------------------------------------------------------------------------------------- DGE
_DGE_KEY = re.compile(r'(?:block(\d+)|blocks)\.(\d+)\.dge\.(.*)$')


def dge_granularities(sd: StateDict):
    """``(Phi, perm)`` of a vtpack checkpoint's ``dge.splits`` (the same in every layer, else
    an error): ``Phi`` in mmdyn's gate order (patch sides ``S / split`` ascending) and
    ``perm[k]`` the vtpack gate index of mmdyn's gate ``k``; ``None`` without splits."""
    splits = {k: tuple(int(x) for x in v.flatten().tolist()) for k, v in sd.items()
              if k.endswith('.dge.splits')}
    if not splits:
        return None
    vals = set(splits.values())
    if len(vals) != 1:
        raise ValueError(f'vtpack checkpoint with different dge.splits per layer: {sorted(vals)}')
    sp = vals.pop()
    size = max(sp)
    if any(x < 1 or size % x for x in sp):
        raise ValueError(f'vtpack dge.splits {sp} do not divide the region side {size}')
    perm = sorted(range(len(sp)), key=lambda k: -sp[k])  # finest (most splits) first
    return tuple(size // sp[k] for k in perm), perm


def split_dge_gates(sd: StateDict) -> Tuple[StateDict, StateDict]:
    """Take the vtpack DGE tensors out of ``sd``: ``(rest, gates)`` with the gates in mmdyn's
    names and gate order; ``dge.splits`` dropped. Any other ``*.dge.*`` key is an error."""
    rest, gates = OrderedDict(), OrderedDict()
    gran = dge_granularities(sd)
    perm = None if gran is None else torch.tensor(gran[1])
    for k, v in sd.items():
        m = _DGE_KEY.match(k)
        if not m:
            rest[k] = v
            continue
        stage, block, name = m.groups()
        if name == 'splits':
            continue
        mg = re.fullmatch(r'router\.gate\.(weight|bias)', name)
        if mg is None:
            raise ValueError(f'unexpected vtpack DGE key {k}')
        if perm is None:
            raise ValueError(f'vtpack DGE gate {k} without dge.splits: the gate order is unknown')
        if v.shape[0] != len(perm):
            raise ValueError(f'{k}: {v.shape[0]} gate rows for {len(perm)} splits')
        pre = f'dge.{int(stage) - 1}.{block}' if stage is not None else f'dge.{block}'
        gates[f'{pre}.gate.proj.{mg.group(1)}'] = v[perm].clone()
    return rest, gates


def classifier_head_keys(ckpt, head: str = 'linear') -> StateDict:
    """The classification head of a classifier checkpoint in mmpretrain names: ``head.fc.*``
    (``LinearClsHead``, ``head='linear'``) or ``head.layers.head.*``
    (``VisionTransformerClsHead``, ``head='vit'``). The source is an official (whai362 /
    vtpack / timm) checkpoint's ``head.weight`` / ``head.bias`` or a whole mmpretrain
    classifier's single linear head in either of those two names."""
    names = {'linear': 'head.fc.', 'vit': 'head.layers.head.'}
    if head not in names:
        raise ValueError(f'head must be one of {sorted(names)}, got {head!r}')
    sd = unwrap_state_dict(ckpt)
    if any(k.startswith('head.layers.pre_logits.') for k in sd):
        raise UserValueError('the checkpoint\'s VisionTransformerClsHead has a hidden layer '
                             '(head.layers.pre_logits); only a single linear head converts')
    for src in ('head.', 'head.fc.', 'head.layers.head.'):
        out = OrderedDict((names[head] + k[len(src):], sd[k])
                          for k in (src + 'weight', src + 'bias') if k in sd)
        if len(out) == 2:
            return out
    raise UserValueError('no classification head in the checkpoint (looked for head.weight / '
                         'head.bias, head.fc.* and head.layers.head.*)')


def _first_layout(keys, rules) -> Optional[str]:
    """The layout of the first ``(pattern, layout)`` rule whose pattern matches the start of
    some key; ``None`` when none does."""
    for pattern, layout in rules:
        if any(re.match(pattern, k) for k in keys):
            return layout
    return None


# --------------------------------------------------------------------------------------- PVT
def detect_pvt_layout(sd: StateDict) -> str:
    """``'mmdyn'``, ``'official'`` (whai362) or ``'mmdet'``."""
    keys = list(sd)
    layout = _first_layout(keys, ((r'stages\.', 'mmdyn'), (r'(patch_embed|block)\d+\.', 'official'),
                                  (r'layers\.\d+\.0\.projection\.', 'mmdet')))
    if layout is not None:
        return layout
    raise UserValueError('unrecognised PVT checkpoint layout (expected whai362 keys like '
                     '"patch_embed1.proj.weight", mmdet keys like "layers.0.0.projection.weight" '
                     f'or mmdyn keys like "stages.0..."); first keys: {keys[:5]}')


def _split_in_proj(prefix: str, w: torch.Tensor, b: torch.Tensor, out: StateDict) -> None:
    c = w.shape[0] // 3
    out[f'{prefix}q.weight'] = w[:c]
    out[f'{prefix}kv.weight'] = w[c:]
    if b is not None:
        out[f'{prefix}q.bias'] = b[:c]
        out[f'{prefix}kv.bias'] = b[c:]


def _renamed(key: str, renames) -> Optional[str]:
    """The new name of ``key`` by the first ``(pattern, name_of_match)`` of ``renames`` whose
    pattern matches its start; ``None`` when none does."""
    for pattern, name in renames:
        m = re.match(pattern, key)
        if m:
            return name(m)
    return None


#: mmdet's PVT keys renamed as they are (patch embeddings, stage positions, stage norms)
_MMDET_PVT_RENAMES = (
    (r'layers\.(\d+)\.0\.(projection|norm)\.(.*)',
     lambda m: f'stages.{m.group(1)}.patch_embed.{m.group(2)}.{m.group(3)}'),
    (r'layers\.(\d+)\.1\.0\.pos_embed$', lambda m: f'stages.{m.group(1)}.pos_embed'),
    (r'layers\.(\d+)\.2\.(.*)', lambda m: f'stages.{m.group(1)}.norm.{m.group(2)}'),
)


def _is_square(n: int) -> bool:
    return n > 0 and round(n ** 0.5) ** 2 == n


def _pvt_official(sd: StateDict) -> StateDict:
    out = OrderedDict()
    stages = sorted({int(m.group(1)) for k in sd for m in [re.match(r'patch_embed(\d+)\.', k)]
                     if m})
    last = stages[-1] if stages else 4
    has_cls = 'cls_token' in sd
    renames = (
        (r'patch_embed(\d+)\.(proj|norm)\.(.*)',
         lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.'
         f'{"projection" if m.group(2) == "proj" else "norm"}.{m.group(3)}'),
        (r'norm(\d+)\.(.*)', lambda m: f'stages.{int(m.group(1)) - 1}.norm.{m.group(2)}'),
        # PVT v1's final norm (after the last stage)
        (r'norm\.(.*)', lambda m: f'stages.{last - 1}.norm.{m.group(1)}'),
    )
    for k, v in sd.items():
        if k.startswith('head') or k == 'dist_token':
            continue
        if k == 'cls_token':  # PVT v1 classifiers (PVT(cls_token=True))
            out['cls_token'] = v
            continue
        new = _renamed(k, renames)
        if new is not None:
            out[new] = v
            continue
        m = re.match(r'pos_embed(\d+)$', k)
        if m:
            s = int(m.group(1))
            if s == last and has_cls:
                out['cls_pos_embed'] = v[:, :1]  # the cls position of PVT v1's last stage
                v = v[:, 1:]
            elif s == last and _is_square(v.shape[1] - 1) and not _is_square(v.shape[1]):
                v = v[:, 1:]  # whai362's detection / segmentation PVT v1: an unused position 0
            out[f'stages.{s - 1}.pos_embed'] = v
            continue
        m = re.match(r'block(\d+)\.(\d+)\.(.*)', k)
        if m:
            rest = m.group(3)
            rest = rest.replace('mlp.dwconv.dwconv.', 'ffn.dwconv.').replace('mlp.', 'ffn.')
            rest = rest.replace('attn.attn_weight.', 'attn.weights.')  # vtpack's DPVT
            out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{rest}'] = v
            continue
        out[k] = v
    return out


def _pvt_mmdet(sd: StateDict) -> StateDict:
    out = OrderedDict()
    # stage i has abs pos embed as module 0 of layers.i.1 in mmdet's PVT v1
    abs_pos = {int(m.group(1)) for k in sd for m in [re.match(r'layers\.(\d+)\.1\.0\.pos_embed$',
                                                               k)] if m}
    conv_ffn = any(re.search(r'\.ffn\.layers\.4\.', k) for k in sd)
    fc2 = '4' if conv_ffn else '3'
    for k, v in sd.items():
        new = _renamed(k, _MMDET_PVT_RENAMES)
        if new is not None:
            out[new] = v
            continue
        m = re.match(r'layers\.(\d+)\.1\.(\d+)\.(.*)', k)
        if m:
            s, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            j -= 1 if s in abs_pos else 0
            pre = f'stages.{s}.blocks.{j}.'
            if rest.startswith('attn.attn.in_proj_'):
                if rest.endswith('weight'):
                    _split_in_proj(pre + 'attn.', v,
                                   sd.get(k.replace('in_proj_weight', 'in_proj_bias')), out)
                continue
            if rest.startswith('attn.attn.out_proj.'):
                out[pre + 'attn.proj.' + rest[len('attn.attn.out_proj.'):]] = v
                continue
            mf = re.match(r'ffn\.layers\.(\d+)\.(.*)', rest)
            if mf:
                idx, p = mf.group(1), mf.group(2)
                if idx == '0':
                    name = 'fc1'
                elif idx == fc2:
                    name = 'fc2'
                elif idx == '1' and conv_ffn:
                    name = 'dwconv'
                else:
                    raise ValueError(f'unexpected mmdet PVT FFN key {k}')
                if name in ('fc1', 'fc2') and p == 'weight' and v.dim() == 4:
                    v = v.flatten(1)
                out[f'{pre}ffn.{name}.{p}'] = v
                continue
            out[pre + rest] = v
            continue
        out[k] = v
    return out


def pvt_to_mmdyn(ckpt) -> StateDict:
    """Convert a PVT / PVTv2 checkpoint (any recognised layout) to mmdyn's layout."""
    return _convert_layout(ckpt, detect_pvt_layout,
                           dict(official=_pvt_official, mmdet=_pvt_mmdet))


def _convert_layout(ckpt, detect, converters) -> StateDict:
    """The backbone tensors of ``ckpt`` converted by ``converters[detect(tensors)]`` (a layout
    without a converter is mmdyn's own), DGE gates taken out first and put back after."""
    sd, gates = split_dge_gates(backbone_state_dict(ckpt))
    layout = detect(sd)
    if layout in converters:
        sd = converters[layout](sd)
    sd.update(gates)
    return sd


# --------------------------------------------------------------------------------------- ViT
def detect_vit_layout(sd: StateDict) -> str:
    """``'mmdyn'``, ``'timm'`` (timm / DeiT / official ViT in timm names), ``'vtpack'`` (its
    DeiT: timm names with separate ``attn.q`` / ``attn.kv``), ``'mmseg'`` or ``'mmpretrain'``."""
    keys = list(sd)
    if _first_layout(keys, ((r'blocks\.\d+\.attn\.q\.weight$', 'separate q / kv'), )):
        # vtpack's DeiT: separate q / kv as mmdyn, timm's other names
        return _first_layout(keys, ((r'blocks\.\d+\.mlp\.|patch_embed\.proj\.', 'vtpack'), )) \
            or 'mmdyn'
    layout = _first_layout(keys, ((r'blocks\.\d+\.attn\.qkv\.weight$', 'timm'),
                                  (r'layers\.\d+\.attn\.attn\.in_proj_weight$', 'mmseg'),
                                  (r'layers\.\d+\.attn\.qkv\.weight$', 'mmpretrain')))
    if layout is not None:
        return layout
    raise UserValueError('unrecognised ViT checkpoint layout (expected timm keys like '
                     '"blocks.0.attn.qkv.weight", mmseg "layers.0.attn.attn.in_proj_weight", '
                     'mmpretrain "layers.0.attn.qkv.weight" or mmdyn "blocks.0.attn.q.weight"); '
                     f'first keys: {keys[:5]}')


def _split_qkv(prefix: str, sd: StateDict, wkey: str, bkey: str, out: StateDict) -> None:
    _split_in_proj(prefix, sd[wkey], sd.get(bkey), out)


def _vit_timm(sd: StateDict) -> StateDict:
    out = OrderedDict()
    has_dist = 'dist_token' in sd
    for k, v in sd.items():
        if k.startswith(('head', 'fc_norm')) or k == 'dist_token':
            continue
        if k == 'pos_embed' and has_dist:
            v = torch.cat([v[:, :1], v[:, 2:]], dim=1)  # drop the distillation position
        m = re.match(r'blocks\.(\d+)\.(.*)', k)
        if m:
            pre, rest = f'blocks.{m.group(1)}.', m.group(2)
            if rest == 'attn.qkv.weight':
                _split_qkv(pre + 'attn.', sd, k, k[:-len('weight')] + 'bias', out)
                continue
            if rest == 'attn.qkv.bias':
                continue
            if rest.startswith(('ls1.', 'ls2.')):  # DeiT-III / timm LayerScale
                raise UserValueError(f'layer-scale checkpoints are not supported ({k})')
            out[pre + rest.replace('mlp.', 'ffn.')] = v
            continue
        if k.startswith('patch_embed.proj.'):
            out['patch_embed.projection.' + k[len('patch_embed.proj.'):]] = v
            continue
        if k.startswith('norm_pre.'):
            out['pre_norm.' + k[len('norm_pre.'):]] = v
            continue
        out[k] = v
    return out


def _vit_mm(sd: StateDict, layout: str) -> StateDict:
    out = OrderedDict()
    has_dist = 'dist_token' in sd  # mmpretrain's DistilledVisionTransformer (DeiT)
    for k, v in sd.items():
        if k.startswith(('head', 'neck')) or k == 'dist_token':
            continue
        if k == 'pos_embed' and has_dist:
            v = torch.cat([v[:, :1], v[:, 2:]], dim=1)  # drop the distillation position
        m = re.match(r'layers\.(\d+)\.(.*)', k)
        if m:
            pre, rest = f'blocks.{m.group(1)}.', m.group(2)
            if rest in ('attn.attn.in_proj_weight', 'attn.qkv.weight'):
                bias = k.replace('in_proj_weight', 'in_proj_bias') if layout == 'mmseg' \
                    else k[:-len('weight')] + 'bias'
                _split_qkv(pre + 'attn.', sd, k, bias, out)
                continue
            if rest in ('attn.attn.in_proj_bias', 'attn.qkv.bias'):
                continue
            if rest.startswith(('attn.gamma', 'ffn.gamma')):
                raise UserValueError(f'layer-scale checkpoints are not supported ({k})')
            rest = rest.replace('attn.attn.out_proj.', 'attn.proj.')
            rest = rest.replace('ln1.', 'norm1.').replace('ln2.', 'norm2.')
            rest = rest.replace('ffn.layers.0.0.', 'ffn.fc1.').replace('ffn.layers.1.', 'ffn.fc2.')
            out[pre + rest] = v
            continue
        if k.startswith('ln1.'):
            out['norm.' + k[4:]] = v
            continue
        if k.startswith(('ln0.', 'ln_pre.')):  # mmseg's pre-norm (``pre_ln``)
            out['pre_norm.' + k.split('.', 1)[1]] = v
            continue
        out[k] = v
    return out


def vit_to_mmdyn(ckpt) -> StateDict:
    """Convert a ViT / DeiT checkpoint (any recognised layout) to mmdyn's layout."""
    return _convert_layout(ckpt, detect_vit_layout, dict(
        timm=_vit_timm, vtpack=_vit_timm, mmseg=functools.partial(_vit_mm, layout='mmseg'),
        mmpretrain=functools.partial(_vit_mm, layout='mmpretrain')))


def apply_init_cfg(model, convert, adapt=None, base_init=None) -> None:
    """The end of a backbone's ``init_weights``, after its own random initialisation: a
    ``Pretrained`` ``init_cfg`` is loaded through ``convert`` (:func:`load_converted`, ``adapt``
    fixing shapes), any other ``init_cfg`` is applied by ``base_init`` (mmengine's
    ``BaseModule.init_weights`` of the model); the model is then marked initialised."""
    pre = find_pretrained_cfg(model.init_cfg)
    if pre is not None:
        load_converted(model, pre['checkpoint'], convert, adapt=adapt, prefix=pre.get('prefix'))
    elif model.init_cfg is not None and base_init is not None:
        base_init()
    model._is_init = True


def pretrained_init_cfg(pretrained, init_cfg):
    """A backbone's ``init_cfg`` given the legacy ``pretrained=PATH`` argument (the OpenMMLab
    1.x spelling): ``dict(type='Pretrained', checkpoint=PATH)``; ``init_cfg`` as it is without
    one. Giving both is an error."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError('give either pretrained or init_cfg, not both')
    if not isinstance(pretrained, str):
        raise TypeError(f'pretrained must be a str or None, got {type(pretrained)}')
    return dict(type='Pretrained', checkpoint=pretrained)


def find_pretrained_cfg(init_cfg):
    """The ``type='Pretrained'`` entry of an ``init_cfg`` (a dict or a list), or None."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for c in cfgs:
        if isinstance(c, dict) and c.get('type') == 'Pretrained':
            if 'checkpoint' not in c:
                raise ValueError('init_cfg type="Pretrained" needs a "checkpoint"')
            return c
    return None


def load_converted(model: torch.nn.Module, filename: str, convert, adapt=None, prefix=None,
                   logger=None) -> Tuple[list, list]:
    """Load ``filename`` into ``model`` through ``convert`` (a ``*_to_mmdyn`` function).

    ``prefix`` keeps only keys under it (mmengine's ``Pretrained`` meaning, e.g.
    ``'backbone.'``). ``adapt(state_dict) -> state_dict`` lets the model fix shapes (resize
    position embeddings). Tensors whose shapes still differ from the model's are skipped with a
    warning. Returns ``(missing_keys, unexpected_keys)``, also logged.
    """
    from mmengine.logging import MMLogger, print_log
    logger = logger or MMLogger.get_current_instance()
    ckpt = load_checkpoint_file(filename, logger=logger)
    if prefix:
        try:
            ckpt = unwrap_state_dict(ckpt, prefix=prefix)
        except KeyError:
            raise ValueError(f'no key of {filename} starts with prefix {prefix!r}') from None
    sd = convert(ckpt)
    if adapt is not None:
        sd = adapt(sd)
    own = model.state_dict()
    skipped = []
    for k in list(sd):
        if k in own and own[k].shape != sd[k].shape:
            skipped.append(f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}')
            del sd[k]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    name = type(model).__name__
    print_log(f'{name}: loaded {len(sd) - len(unexpected)} tensors from {filename}', logger)
    if skipped:
        print_log(f'{name}: skipped for shape mismatch: {skipped}', logger, level=30)
    if missing:
        print_log(f'{name}: missing keys: {list(missing)}', logger, level=30)
    if unexpected:
        print_log(f'{name}: unexpected keys: {list(unexpected)}', logger, level=30)
    return list(missing), list(unexpected)
