"""ViT / DeiT host: equivalence with mmseg's and mmpretrain's VisionTransformer under the same
weights, timm/DeiT checkpoints, output types, FLOPs vs FlopCounterMode, published sizes."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmdyn.models.backbones import ViT
from mmdyn.models.layers import explicit_attention
from mmdyn.models.utils.ckpt_convert import detect_vit_layout, load_converted, vit_to_mmdyn
from mmdyn.registry import MODELS

TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2)


def randomize(model, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    model.eval()  # some OpenMMLab train() overrides return None
    return model


def ours(**kw):
    kw.setdefault('out_indices', (0, 1))
    return ViT(arch=dict(TINY), img_size=32, patch_size=8, **kw).eval()


def compare(ref_outs, outs):
    assert len(ref_outs) == len(outs)
    for a, b in zip(ref_outs, outs):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize('with_cls_token', [True, False])
def test_equivalent_to_mmseg(with_cls_token):
    from mmseg.models.backbones import VisionTransformer
    ref = VisionTransformer(img_size=32, patch_size=8, embed_dims=16, num_layers=2, num_heads=2,
                            mlp_ratio=2, out_indices=(0, 1), qkv_bias=True,
                            with_cls_token=with_cls_token, final_norm=True, patch_bias=True,
                            norm_cfg=dict(type='LN', eps=1e-6), interpolate_mode='bicubic')
    randomize(ref)
    sd = ref.state_dict()
    assert detect_vit_layout(sd) == 'mmseg'
    model = ours(with_cls_token=with_cls_token)
    conv = vit_to_mmdyn(sd)
    if not with_cls_token:
        # mmseg keeps a cls token and its position even when it drops it from the sequence
        conv.pop('cls_token')
        conv['pos_embed'] = conv['pos_embed'][:, 1:]
    model.load_state_dict(conv, strict=True)
    for shape in [(32, 32), (48, 40)]:  # the second resizes the position embedding (bicubic)
        x = torch.randn(2, 3, *shape)
        with torch.no_grad():
            compare(ref(x), model(x))


def _mmpretrain_vit(**kw):
    # mmpretrain is a hard dependency: a broken install (or torchvision) must fail, not skip
    from mmpretrain.models.backbones import VisionTransformer
    return VisionTransformer(arch=dict(embed_dims=16, num_layers=2, num_heads=2,
                                       feedforward_channels=32), img_size=32, patch_size=8,
                             final_norm=True, interpolate_mode='bicubic', **kw)


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token', 'raw'])
def test_equivalent_to_mmpretrain(out_type):
    ref = randomize(_mmpretrain_vit(out_indices=(0, 1), out_type=out_type))
    sd = ref.state_dict()
    assert detect_vit_layout(sd) == 'mmpretrain'
    model = ours(out_type=out_type)
    model.load_state_dict(vit_to_mmdyn(sd), strict=True)
    for shape in [(32, 32), (40, 56)]:
        x = torch.randn(2, 3, *shape)
        with torch.no_grad():
            compare(ref(x), model(x))


def _timm_sd(depth=2, c=16, hid=32, grid=4, dist=False, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(shape, generator=g) * std

    extra = 2 if dist else 1
    sd = {'cls_token': r(1, 1, c), 'pos_embed': r(1, grid * grid + extra, c),
          'patch_embed.proj.weight': r(c, 3, 8, 8), 'patch_embed.proj.bias': r(c)}
    if dist:
        sd['dist_token'] = r(1, 1, c)
    for j in range(depth):
        p = f'blocks.{j}.'
        for n in ('norm1', 'norm2'):
            sd[p + n + '.weight'], sd[p + n + '.bias'] = 1 + r(c), r(c)
        sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'] = r(3 * c, c), r(3 * c)
        sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'] = r(c, c), r(c)
        sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'] = r(hid, c), r(hid)
        sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'] = r(c, hid), r(c)
    sd['norm.weight'], sd['norm.bias'] = 1 + r(c), r(c)
    sd['head.weight'], sd['head.bias'] = r(10, c), r(10)
    if dist:
        sd['head_dist.weight'], sd['head_dist.bias'] = r(10, c), r(10)
    return sd


def _ref_timm(sd, x, heads=2, dist=False):
    """Straightforward functional timm ViT/DeiT forward on timm keys; returns the final
    normed tokens (cls first; the distillation token dropped from the output)."""
    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=8)
    t = t.flatten(2).transpose(1, 2)
    b, n, c = t.shape
    toks = [sd['cls_token'].expand(b, -1, -1)]
    if dist:
        toks.append(sd['dist_token'].expand(b, -1, -1))
    t = torch.cat(toks + [t], 1) + sd['pos_embed']
    d = c // heads
    j = 0
    while f'blocks.{j}.norm1.weight' in sd:
        p = f'blocks.{j}.'
        y = F.layer_norm(t, (c, ), sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], 1e-6)
        qkv = F.linear(y, sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(b, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
        o = ((q @ k.transpose(-2, -1)) * d ** -0.5).softmax(-1) @ v
        t = t + F.linear(o.transpose(1, 2).reshape(b, -1, c), sd[p + 'attn.proj.weight'],
                         sd[p + 'attn.proj.bias'])
        y = F.layer_norm(t, (c, ), sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], 1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'])),
                     sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        t = t + y
        j += 1
    t = F.layer_norm(t, (c, ), sd['norm.weight'], sd['norm.bias'], 1e-6)
    if dist:
        t = torch.cat([t[:, :1], t[:, 2:]], 1)
    return t


@pytest.mark.parametrize('dist', [False, True])
def test_timm_deit_checkpoint(dist, tmp_path):
    sd = _timm_sd(dist=dist)
    assert detect_vit_layout(sd) == 'timm'
    path = str(tmp_path / 'deit.pth')
    torch.save({'model': sd}, path)  # DeiT's released files wrap weights in 'model'
    model = ours(out_indices=-1, out_type='raw', init_cfg=dict(type='Pretrained',
                                                                checkpoint=path))
    model.init_weights()
    model.eval()
    missing, unexpected = load_converted(ours(), path, vit_to_mmdyn)
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = _ref_timm(sd, x, dist=dist)
        out = model(x)[0]
    assert out.shape == ref.shape == (2, 17, 16)
    if dist:  # the distillation token and its position are dropped (it took part in DeiT's
        # attention, so outputs differ from the distilled model)
        pos = torch.cat([sd['pos_embed'][:, :1], sd['pos_embed'][:, 2:]], 1)
        assert torch.equal(model.pos_embed.data, pos)
        assert torch.equal(model.blocks[1].attn.kv.weight.data,
                           sd['blocks.1.attn.qkv.weight'][16:])
        return
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_layer_scale_checkpoints_are_refused_in_both_layouts(tmp_path):
    """A DeiT-III style checkpoint (LayerScale gammas) in timm layout is refused as the
    mmpretrain one is (it loaded with the gammas dropped, a warning only)."""
    sd = _timm_sd()
    sd['blocks.1.ls1.gamma'] = torch.full((16, ), 1e-5)
    with pytest.raises(ValueError, match=r'layer-scale checkpoints are not supported '
                       r'\(blocks\.1\.ls1\.gamma\)'):
        vit_to_mmdyn(sd)
    with pytest.raises(ValueError, match='layer-scale checkpoints are not supported'):
        vit_to_mmdyn({'layers.0.attn.qkv.weight': torch.zeros(48, 16),
                      'layers.0.attn.gamma1.weight': torch.ones(16)})


def test_output_types_and_final_norm():
    model = randomize(ours(out_indices=(0, -1)))
    x = torch.randn(2, 3, 32, 48)
    fm = model(x)
    assert [tuple(o.shape) for o in fm] == [(2, 16, 4, 6)] * 2
    model.out_type = 'cls_token'
    cls = model(x)
    assert [tuple(o.shape) for o in cls] == [(2, 16)] * 2
    model.out_type = 'raw'
    raw = model(x)
    assert raw[1].shape == (2, 25, 16)
    assert torch.allclose(raw[1][:, 0], cls[1]) and torch.allclose(
        raw[1][:, 1:].transpose(1, 2).reshape(2, 16, 4, 6), fm[1])
    # final norm only on the last block's output
    no_norm = ours(out_indices=(0, 1), final_norm=False)
    no_norm.load_state_dict({k: v for k, v in model.state_dict().items()
                             if not k.startswith('norm.')})
    nn_out = no_norm(x)
    assert torch.allclose(nn_out[0], fm[0]) and not torch.allclose(nn_out[1], fm[1])


def test_static_flops_match_flop_counter():
    for kw, shape in [({}, (32, 32)), (dict(with_cls_token=False), (40, 24)),
                      ({}, (36, 30))]:  # 36x30: mmcv's corner padding to 40x32
        model = randomize(ours(**kw))
        x = torch.randn(1, 3, *shape)
        with FlopCounterMode(display=False) as fc, torch.no_grad(), explicit_attention(model):
            model(x)
        assert model.static_flops(shape) == fc.get_total_flops() // 2
        bd = model.flops_breakdown(shape)
        assert set(bd) == {'patch_embed', 'blocks.0', 'blocks.1'}
        n = model.num_tokens(shape)
        assert bd['blocks.1'] == model.blocks[1].flops(n)


def test_full_size_params_and_forward():
    # ViT-S/16 and DeiT-S: 22M parameters with the 1000-way head (DeiT paper Table 1: 22M;
    # 22.05M exactly in timm); DeiT-Ti 5M, DeiT-B 86M
    for arch, pub in [('vit-s', 22.05e6), ('deit-t', 5.7e6), ('deit-b', 86.6e6)]:
        with torch.device('meta'):
            m = ViT(arch=arch)
        n = sum(p.numel() for p in m.parameters()) + m.embed_dims * 1000 + 1000
        assert abs(n - pub) / pub < 0.01, (arch, n)
    model = ViT(arch='deit-t', out_indices=(3, 7, 11))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))  # position embedding resized from 14x14
    assert [tuple(o.shape) for o in outs] == [(1, 192, 4, 6)] * 3
    assert all(torch.isfinite(o).all() for o in outs)


def test_registry_and_errors(tmp_path):
    m = MODELS.build(dict(type='ViT', arch='deit-s', img_size=64, out_type='cls_token'))
    assert m.pos_embed.shape == (1, 17, 384)
    with pytest.raises(KeyError, match="unknown arch 'vit-h'"):
        ViT(arch='vit-h')
    with pytest.raises(KeyError, match='misses'):
        ViT(arch=dict(embed_dims=8))
    with pytest.raises(ValueError, match='out_type'):
        ViT(arch=dict(TINY), out_type='avg')
    with pytest.raises(ValueError, match='with_cls_token'):
        ViT(arch=dict(TINY), out_type='cls_token', with_cls_token=False)
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        ours()(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='out_indices'):
        ours(out_indices=(2, ))
    # a checkpoint with a 224-layout position embedding loads into a 32-layout model
    big = randomize(ViT(arch=dict(TINY), img_size=64, patch_size=8))
    path = str(tmp_path / 'big.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in big.state_dict().items()}}, path)
    small = ours(out_indices=-1, init_cfg=dict(type='Pretrained', checkpoint=path))
    small.init_weights()
    x = torch.randn(1, 3, 32, 32)
    big.out_indices = (1, )
    with torch.no_grad():
        assert torch.allclose(big(x)[0], small.eval()(x)[0], atol=1e-5)
    frozen = ours(frozen_stages=1)
    frozen.train()
    assert not frozen.blocks[0].training and frozen.blocks[1].training
    assert not frozen.pos_embed.requires_grad
    assert all(p.requires_grad for p in frozen.blocks[1].parameters())
