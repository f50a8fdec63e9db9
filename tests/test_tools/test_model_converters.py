"""tools/model_converters/{pvt2mmdyn,vit2mmdyn}.py: convert checkpoints in the official, mmdet,
mmseg, mmpretrain and timm key layouts; the results load strictly and compute the same."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmdyn.models.backbones import PVT, PVTv2, ViT
from mmdyn.models.backbones.pvt import MMDET_NORMS
from mmdyn.models.utils.ckpt_convert import (detect_pvt_layout, detect_vit_layout, pvt_to_mmdyn,
                                             unwrap_state_dict, vit_to_mmdyn)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PVT_TINY = dict(embed_dims=[4, 8, 20, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 5, 8],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
VIT_TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2)


def tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', 'model_converters', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def randomize(model, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    model.eval()  # some OpenMMLab train() overrides return None
    return model


def _to_official(sd, head=True):
    """mmdyn PVT v1 / v2 keys -> whai362 keys (test-side inverse, written independently); a
    v1 ``pos_embed4`` gets the unused position 0 of whai362's detection / segmentation PVT."""
    out = {}
    for k, v in sd.items():
        parts = k.split('.')
        s = int(parts[1]) + 1
        if parts[2] == 'patch_embed':
            out[f'patch_embed{s}.' + ('proj' if parts[3] == 'projection' else 'norm') + '.' +
                parts[4]] = v
        elif parts[2] == 'norm':
            out[f'norm{s}.{parts[3]}'] = v
        elif parts[2] == 'pos_embed':
            out[f'pos_embed{s}'] = torch.cat([torch.randn(1, 1, 32), v], 1) if s == 4 else v
        else:
            rest = '.'.join(parts[4:]).replace('ffn.dwconv.', 'mlp.dwconv.dwconv.').replace(
                'ffn.', 'mlp.')
            out[f'block{s}.{parts[3]}.{rest}'] = v
    if head:
        out['head.weight'] = torch.randn(10, 32)
        out['head.bias'] = torch.randn(10)
    return out


def test_pvt2mmdyn_cli_on_official_checkpoint(run_tool, tmp_path):
    src_model = randomize(PVTv2(arch=dict(PVT_TINY)))
    official = _to_official(src_model.state_dict())
    assert detect_pvt_layout(official) == 'official'
    src, dst = tmp_path / 'pvt_v2_official.pth', tmp_path / 'out' / 'pvt_v2_mmdyn.pth'
    torch.save(official, src)
    res = run_tool('model_converters/pvt2mmdyn.py', src, dst, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'official layout' in res.stdout
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert ckpt['meta']['converted_from'] == 'official'
    model = PVTv2(arch=dict(PVT_TINY)).eval()
    model.load_state_dict(ckpt['state_dict'], strict=True)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        for a, b in zip(src_model(x), model(x)):
            assert torch.equal(a, b)


def test_pvt2mmdyn_on_mmdet_detector_checkpoint(tmp_path, capsys):
    from mmdet.models.backbones.pvt import PyramidVisionTransformer
    ref = randomize(PyramidVisionTransformer(embed_dims=4, num_layers=[1, 1, 1, 1],
                                             mlp_ratios=[2, 2, 2, 2]))
    # a whole detector checkpoint as mmengine writes it: prefixed keys, neck, meta
    sd = {'backbone.' + k: v for k, v in ref.state_dict().items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 4, 1, 1)
    src, dst = str(tmp_path / 'retinanet_pvt.pth'), str(tmp_path / 'pvt.pth')
    torch.save({'state_dict': sd, 'meta': {'epoch': 12, 'mmdet_version': '3.3.0'}}, src)
    tool('pvt2mmdyn').main([src, dst])
    assert 'mmdet layout' in capsys.readouterr().out
    model = PVT(arch=dict(PVT_TINY), **MMDET_NORMS).eval()  # mmdet's eps 1e-6 everywhere
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ref(x), model(x)):
            assert torch.allclose(a, b, atol=1e-5)
    # converting an mmdyn checkpoint again changes nothing
    again = pvt_to_mmdyn(torch.load(dst, weights_only=True))
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


def _timm(sd):
    """mmdyn ViT keys -> timm keys (test-side inverse)."""
    out = {}
    for k, v in sd.items():
        if k.endswith('attn.q.weight') or k.endswith('attn.q.bias'):
            kv = sd[k.replace('attn.q.', 'attn.kv.')]
            out[k.replace('attn.q.', 'attn.qkv.')] = torch.cat([v, kv], 0)
        elif '.attn.kv.' in k:
            continue
        else:
            out[k.replace('patch_embed.projection.', 'patch_embed.proj.').replace(
                '.ffn.', '.mlp.')] = v
    out['head.weight'], out['head.bias'] = torch.randn(5, 16), torch.randn(5)
    return out


def test_vit2mmdyn_cli_on_timm_checkpoint(run_tool, tmp_path):
    src_model = randomize(ViT(arch=dict(VIT_TINY), img_size=32, patch_size=8, out_type='raw'))
    timm_sd = _timm(src_model.state_dict())
    assert detect_vit_layout(timm_sd) == 'timm'
    src, dst = tmp_path / 'deit_tiny.pth', tmp_path / 'deit_tiny_mmdyn.pth'
    torch.save({'model': timm_sd}, src)
    res = run_tool('model_converters/vit2mmdyn.py', src, dst, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'timm layout' in res.stdout
    model = ViT(arch=dict(VIT_TINY), img_size=32, patch_size=8, out_type='raw').eval()
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src_model(x)[0], model(x)[0])


def test_vit2mmdyn_on_mmseg_segmentor_checkpoint(tmp_path, capsys):
    from mmseg.models.backbones import VisionTransformer
    ref = randomize(VisionTransformer(img_size=32, patch_size=8, embed_dims=16, num_layers=2,
                                      num_heads=2, mlp_ratio=2, final_norm=True,
                                      patch_bias=True, norm_cfg=dict(type='LN', eps=1e-6)))
    sd = {'backbone.' + k: v for k, v in ref.state_dict().items()}
    sd['decode_head.conv_seg.weight'] = torch.randn(3, 16, 1, 1)
    src, dst = str(tmp_path / 'segmenter.pth'), str(tmp_path / 'vit.pth')
    torch.save({'state_dict': sd, 'meta': {}}, src)
    tool('vit2mmdyn').main([src, dst])
    assert 'mmseg layout' in capsys.readouterr().out
    model = ViT(arch=dict(VIT_TINY), img_size=32, patch_size=8).eval()
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ref(x)[0], model(x)[0], atol=1e-5)


def test_unknown_layouts_fail_clearly(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, path)
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    with pytest.raises(SystemExit) as e:  # the converter: one line, exit status 2
        tool('pvt2mmdyn').main([path, str(tmp_path / 'x.pth')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1
    assert err.startswith('pvt2mmdyn.py: error: unrecognised PVT checkpoint layout')
    monkeypatch.setenv('MMDYN_DEBUG', '1')  # the traceback on demand
    with pytest.raises(ValueError, match='unrecognised PVT checkpoint layout'):
        tool('pvt2mmdyn').main([path, str(tmp_path / 'x.pth')])
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'nope')
    monkeypatch.delenv('MMDYN_DEBUG')
    with pytest.raises(SystemExit):
        tool('vit2mmdyn').main([str(bad), str(tmp_path / 'y.pth')])
    assert capsys.readouterr().err == (f'vit2mmdyn.py: error: not a readable checkpoint: {bad} '
                                       '(not a torch checkpoint: unrecognised bytes)\n')
    with pytest.raises(ValueError, match='unrecognised ViT checkpoint layout'):
        vit_to_mmdyn(torch.load(path, weights_only=True))
    with pytest.raises(TypeError, match='no state dict'):
        unwrap_state_dict([1, 2])


def _mmpretrain_vit_classifier(backbone, hidden_dim=None):
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    head = dict(type='VisionTransformerClsHead', num_classes=5, in_channels=16)
    if hidden_dim:
        head['hidden_dim'] = hidden_dim
    return PRETRAIN_MODELS.build(dict(type='ImageClassifier', backbone=backbone, head=head))


def test_vit2mmdyn_classifier_from_mmpretrain_classifier(tmp_path, capsys):
    """A whole mmpretrain ViT classifier (``backbone.*`` and ``head.layers.head.*``) through
    ``--classifier``: the logits of the same classifier on mmdyn's ViT; a head with a hidden
    layer does not convert (one line, not a silently dropped layer)."""
    arch = dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32)
    ref = randomize(_mmpretrain_vit_classifier(dict(
        type='VisionTransformer', arch=arch, img_size=32, patch_size=8, final_norm=True,
        out_type='cls_token')))
    src, dst = str(tmp_path / 'vit_cls.pth'), str(tmp_path / 'vit_cls_mmdyn.pth')
    torch.save({'state_dict': ref.state_dict(), 'meta': {}}, src)
    tool('vit2mmdyn').main([src, dst, '--classifier'])
    assert 'mmpretrain layout' in capsys.readouterr().out
    model = _mmpretrain_vit_classifier(dict(
        type='mmdyn.ViT', arch=dict(VIT_TINY), img_size=32, patch_size=8,
        out_type='cls_token')).eval()
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_logits = ref(x, mode='tensor')
        assert torch.allclose(model(x, mode='tensor'), ref_logits, atol=1e-5)
    hidden = _mmpretrain_vit_classifier(dict(
        type='VisionTransformer', arch=arch, img_size=32, patch_size=8), hidden_dim=8)
    torch.save({'state_dict': hidden.state_dict()}, src)
    with pytest.raises(SystemExit) as e:
        tool('vit2mmdyn').main([src, dst, '--classifier'])
    assert e.value.code == 2
    assert 'head.layers.pre_logits' in capsys.readouterr().err


def test_pvt2mmdyn_on_official_pvt_v1_detection_checkpoint(tmp_path):
    """whai362's detection / segmentation PVT v1 keeps an unused position 0 in ``pos_embed4``
    (``num_patches + 1`` positions, no cls token; its forward reads ``[:, 1:]``): converted to
    the last stage's grid, the outputs of the source model."""
    src_model = randomize(PVT(arch=dict(PVT_TINY), pretrain_img_size=64))
    det = _to_official(src_model.state_dict(), head=False)
    assert det['pos_embed4'].shape[1] == 5
    src, dst = str(tmp_path / 'pvt_small_det.pth'), str(tmp_path / 'pvt_mmdyn.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in det.items()}}, src)
    tool('pvt2mmdyn').main([src, dst])
    model = PVT(arch=dict(PVT_TINY), pretrain_img_size=64).eval()
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(src_model(x), model(x)):
            assert torch.equal(a, b)


def test_vit2mmdyn_on_mmseg_pre_norm_and_mmpretrain_distilled_deit(tmp_path):
    """mmseg's pre-norm (``ln_pre``) is the host's ``pre_norm`` (the same outputs);
    mmpretrain's distilled DeiT loses its distillation token and position, as timm's does."""
    from mmpretrain.models.backbones import DistilledVisionTransformer
    from mmseg.models.backbones import VisionTransformer
    ref = randomize(VisionTransformer(img_size=32, patch_size=8, embed_dims=16, num_layers=2,
                                      num_heads=2, mlp_ratio=2, final_norm=True,
                                      pre_norm=True, norm_cfg=dict(type='LN', eps=1e-6)))
    assert 'ln_pre.weight' in ref.state_dict()
    model = ViT(arch=dict(VIT_TINY), img_size=32, patch_size=8, pre_norm=True,
                patch_bias=False).eval()
    model.load_state_dict(vit_to_mmdyn(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ref(x)[0], model(x)[0], atol=1e-5)
    deit = randomize(DistilledVisionTransformer(
        arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=32, patch_size=8))
    sd = deit.state_dict()
    conv = vit_to_mmdyn(sd)
    assert 'dist_token' not in conv
    assert torch.equal(conv['pos_embed'], torch.cat([sd['pos_embed'][:, :1],
                                                     sd['pos_embed'][:, 2:]], 1))
    ViT(arch=dict(VIT_TINY), img_size=32, patch_size=8).load_state_dict(conv, strict=True)
