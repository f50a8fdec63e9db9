"""PVT / PVTv2 hosts: equivalence with mmdet's PyramidVisionTransformer(V2) under the same
weights, loading official (whai362) checkpoints, FLOPs vs FlopCounterMode, published sizes."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch.utils.flop_counter import FlopCounterMode

from mmdyn.models.backbones import PVT, PVTv2
from mmdyn.models.backbones.pvt import MMDET_NORMS
from mmdyn.models.layers import explicit_attention
from mmdyn.models.utils.ckpt_convert import detect_pvt_layout, load_converted, pvt_to_mmdyn
from mmdyn.registry import MODELS

# tiny settings: mmdet builds stage widths as embed_dims * num_heads[i]
HEADS = [1, 2, 5, 8]
TINY = dict(embed_dims=[4 * h for h in HEADS], depths=[1, 2, 1, 1], num_heads=HEADS,
            mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])


def mmdet_pvt(v2):
    from mmdet.models.backbones.pvt import (PyramidVisionTransformer,
                                            PyramidVisionTransformerV2)
    cls = PyramidVisionTransformerV2 if v2 else PyramidVisionTransformer
    return cls(embed_dims=4, num_layers=TINY['depths'], num_heads=HEADS, mlp_ratios=[2, 2, 2, 2],
               sr_ratios=[8, 4, 2, 1], drop_path_rate=0.1)


def randomize(model, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    model.eval()  # some OpenMMLab train() overrides return None
    return model


def ours(v2, **kw):
    """Our PVT in mmdet's norm layout (v1: eps 1e-6 in the patch-embedding and SR norms too),
    for the comparisons with mmdet."""
    if not v2:
        kw = {**MMDET_NORMS, **kw}
    return (PVTv2 if v2 else PVT)(arch=dict(TINY), drop_path_rate=0.1, **kw).eval()


@pytest.mark.parametrize('v2', [False, True])
def test_equivalent_to_mmdet(v2):
    ref = randomize(mmdet_pvt(v2))
    sd = ref.state_dict()
    assert detect_pvt_layout(sd) == 'mmdet'
    model = ours(v2)
    model.load_state_dict(pvt_to_mmdyn(sd), strict=True)
    torch.manual_seed(0)
    for shape in [(64, 64), (72, 96)]:  # pos embeds (v1) are resized from the 224 layout
        x = torch.randn(2, 3, *shape)
        with torch.no_grad():
            a, b = ref(x), model(x)
        assert len(a) == len(b) == 4
        for i, (ra, rb) in enumerate(zip(a, b)):
            assert ra.shape == rb.shape
            stride = 4 * 2 ** i
            assert rb.shape[1] == TINY['embed_dims'][i]
            assert rb.shape[-1] in (shape[1] // stride, math.ceil(shape[1] / stride))
            assert torch.allclose(ra, rb, atol=1e-5), (i, (ra - rb).abs().max())


def _official_sd(v2, linear=False, seed=0, std=0.2):
    """Random weights in the whai362 key layout (classification checkpoint with head)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(shape, generator=g) * std

    sd, c_in = {}, 3
    ks = [7, 3, 3, 3] if v2 else [4, 2, 2, 2]
    grid = 224
    for s in range(1, 5):
        c = TINY['embed_dims'][s - 1]
        hid = c * TINY['mlp_ratios'][s - 1]
        sr = TINY['sr_ratios'][s - 1]
        k = ks[s - 1]
        sd[f'patch_embed{s}.proj.weight'] = r(c, c_in, k, k)
        sd[f'patch_embed{s}.proj.bias'] = r(c)
        sd[f'patch_embed{s}.norm.weight'] = 1 + r(c)
        sd[f'patch_embed{s}.norm.bias'] = r(c)
        grid //= 4 if s == 1 else 2
        if not v2:
            sd[f'pos_embed{s}'] = r(1, grid * grid + (1 if s == 4 else 0), c)
        for j in range(TINY['depths'][s - 1]):
            p = f'block{s}.{j}.'
            for n in ('norm1', 'norm2'):
                sd[p + n + '.weight'], sd[p + n + '.bias'] = 1 + r(c), r(c)
            sd[p + 'attn.q.weight'], sd[p + 'attn.q.bias'] = r(c, c), r(c)
            sd[p + 'attn.kv.weight'], sd[p + 'attn.kv.bias'] = r(2 * c, c), r(2 * c)
            sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'] = r(c, c), r(c)
            if linear or sr > 1:
                ksr = 1 if linear else sr
                sd[p + 'attn.sr.weight'], sd[p + 'attn.sr.bias'] = r(c, c, ksr, ksr), r(c)
                sd[p + 'attn.norm.weight'], sd[p + 'attn.norm.bias'] = 1 + r(c), r(c)
            sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'] = r(hid, c), r(hid)
            if v2:
                sd[p + 'mlp.dwconv.dwconv.weight'] = r(hid, 1, 3, 3)
                sd[p + 'mlp.dwconv.dwconv.bias'] = r(hid)
            sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'] = r(c, hid), r(c)
        if v2:
            sd[f'norm{s}.weight'], sd[f'norm{s}.bias'] = 1 + r(c), r(c)
        c_in = c
    if not v2:
        sd['norm.weight'], sd['norm.bias'] = 1 + r(c_in), r(c_in)
        sd['cls_token'] = r(1, 1, c_in)
    sd['head.weight'], sd['head.bias'] = r(10, c_in), r(10)
    return sd


@pytest.mark.parametrize('v2', [False, True])
def test_official_checkpoint_matches_mmdet_loading_it(v2, tmp_path):
    sd = _official_sd(v2)
    assert detect_pvt_layout(sd) == 'official'
    path = str(tmp_path / 'official.pth')
    torch.save({'model': sd}, path)  # the official files wrap weights in 'model'
    ref = mmdet_pvt(v2)
    ref.init_cfg = ConfigDict(type='Pretrained', checkpoint=path)  # mmdet reads .checkpoint
    ref.init_weights()
    ref.eval()
    model = ours(v2, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    missing, unexpected = load_converted(ours(v2), path, pvt_to_mmdyn)
    assert missing == []
    # v1's class token and final norm have no place in a model without them (as in mmdet)
    assert sorted(unexpected) == ([] if v2 else ['cls_pos_embed', 'cls_token',
                                                 'stages.3.norm.bias', 'stages.3.norm.weight'])
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for a, b in zip(ref(x), model(x)):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def _ref_pvtv2_official(sd, x, linear):
    """Straightforward functional PVTv2 on whai362 keys (eps 1e-6 everywhere, as mmdyn/mmdet)."""

    def ln(t, p):
        return F.layer_norm(t, t.shape[-1:], sd[p + '.weight'], sd[p + '.bias'], 1e-6)

    outs = []
    for s in range(1, 5):
        k = 7 if s == 1 else 3
        x = F.conv2d(x, sd[f'patch_embed{s}.proj.weight'], sd[f'patch_embed{s}.proj.bias'],
                     stride=4 if s == 1 else 2, padding=k // 2)
        b, c, h, w = x.shape
        t = ln(x.flatten(2).transpose(1, 2), f'patch_embed{s}.norm')
        heads = HEADS[s - 1]
        for j in range(TINY['depths'][s - 1]):
            p = f'block{s}.{j}.'
            y = ln(t, p + 'norm1')
            q = F.linear(y, sd[p + 'attn.q.weight'], sd[p + 'attn.q.bias'])
            m = y.transpose(1, 2).reshape(b, c, h, w)
            sr = TINY['sr_ratios'][s - 1]
            if linear:
                m = F.conv2d(F.adaptive_avg_pool2d(m, 7), sd[p + 'attn.sr.weight'],
                             sd[p + 'attn.sr.bias'])
                kv_in = F.gelu(ln(m.flatten(2).transpose(1, 2), p + 'attn.norm'))
            elif sr > 1:
                m = F.conv2d(m, sd[p + 'attn.sr.weight'], sd[p + 'attn.sr.bias'], stride=sr)
                kv_in = ln(m.flatten(2).transpose(1, 2), p + 'attn.norm')
            else:
                kv_in = y
            kv = F.linear(kv_in, sd[p + 'attn.kv.weight'], sd[p + 'attn.kv.bias'])
            kk, vv = kv[..., :c], kv[..., c:]
            d = c // heads

            def split(z):
                return z.reshape(b, -1, heads, d).transpose(1, 2)

            att = (split(q) @ split(kk).transpose(-2, -1) * d ** -0.5).softmax(-1)
            o = (att @ split(vv)).transpose(1, 2).reshape(b, -1, c)
            t = t + F.linear(o, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
            y = F.linear(ln(t, p + 'norm2'), sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'])
            if linear:
                y = F.relu(y)
            hid = y.shape[-1]
            y = F.conv2d(y.transpose(1, 2).reshape(b, hid, h, w),
                         sd[p + 'mlp.dwconv.dwconv.weight'], sd[p + 'mlp.dwconv.dwconv.bias'],
                         padding=1, groups=hid)
            y = F.gelu(y.flatten(2).transpose(1, 2))
            t = t + F.linear(y, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        t = ln(t, f'norm{s}')
        x = t.transpose(1, 2).reshape(b, c, h, w)
        outs.append(x)
    return outs


@pytest.mark.parametrize('linear', [False, True])
def test_official_pvtv2_layout_against_functional_reference(linear, tmp_path):
    # mmdet has no PVTv2-Li: the linear variant (avg-pool 7x7 SR, ReLU in the FFN) is checked
    # against a direct implementation on the official keys
    sd = _official_sd(True, linear=linear, seed=3)
    path = str(tmp_path / 'pvt_v2_li.pth')
    torch.save(sd, path)
    model = PVTv2(arch=dict(TINY, linear=linear), init_cfg=dict(type='Pretrained',
                                                                checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 70, 60)
    with torch.no_grad():
        ref = _ref_pvtv2_official(sd, x, linear)
        out = model(x)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize('cls,kw,shape', [
    (PVT, {}, (64, 64)), (PVT, {}, (72, 100)), (PVTv2, {}, (64, 64)), (PVTv2, {}, (70, 45)),
    (PVTv2, dict(linear=True), (96, 64)),
])
def test_static_flops_match_flop_counter(cls, kw, shape):
    model = randomize(cls(arch=dict(TINY), **kw))
    x = torch.randn(1, 3, *shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad(), explicit_attention(model):
        model(x)
    counted = fc.get_total_flops() // 2
    analytic = model.static_flops(shape)
    assert analytic == counted
    bd = model.flops_breakdown(shape)
    assert sum(bd.values()) == analytic
    assert set(bd) == {f'stages.{i}.patch_embed' for i in range(4)} | {
        f'stages.{i}.blocks.{j}' for i in range(4) for j in range(TINY['depths'][i])}
    # per stage: a block's figure equals the block's own flops() on the stage grid
    hw = model.stage_shapes(shape)[1]
    assert bd['stages.1.blocks.1'] == model.stages[1].blocks[1].flops(hw[0] * hw[1], hw)


def test_full_size_params_and_forward():
    # cls models = backbone + 1000-way head; PVTv2 paper Table 2: B1 14.0M, B2 25.4M;
    # PVT v1 paper Table 2: PVT-Small 24.5M (ours has no cls token / final norm: -1.5K);
    # B2-Li 22.6M (paper); B0 3.7M (whai362 README; the paper's 3.4M leaves out the head)
    for cls, arch, pub in [(PVTv2, 'b1', 14.0e6), (PVTv2, 'b2', 25.4e6), (PVT, 'small', 24.5e6),
                           (PVTv2, 'b2-li', 22.6e6), (PVTv2, 'b0', 3.7e6)]:
        with torch.device('meta'):
            m = cls(arch=arch)
        n = sum(p.numel() for p in m.parameters()) + m.embed_dims[-1] * 1000 + 1000
        assert abs(n - pub) / pub < 0.01, (arch, n)
    model = PVTv2(arch='b1').eval()
    model.init_weights()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 320, 4, 4),
                                              (1, 512, 2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_out_indices_registry_and_errors():
    m = MODELS.build(dict(type='PVTv2', arch=dict(TINY), out_indices=(1, 3)))
    # from an mmdet config (default scope mmdet) the scoped name reaches mmdyn's registry
    from mmdet.registry import MODELS as MMDET_MODELS
    assert isinstance(MMDET_MODELS.build(dict(type='mmdyn.PVTv2', arch=dict(TINY))), PVTv2)
    outs = m(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [8, 32]
    assert isinstance(MODELS.build(dict(type='PVT', arch='tiny')), PVT)
    with pytest.raises(KeyError, match="unknown arch 'b9'"):
        PVTv2(arch='b9')
    with pytest.raises(KeyError, match='misses'):
        PVT(arch=dict(embed_dims=[8]))
    with pytest.raises(ValueError, match='out_indices'):
        PVT(arch=dict(TINY), out_indices=(4, ))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        m(torch.randn(1, 1, 32, 32))
    m4 = PVTv2(arch=dict(TINY), in_channels=4)
    assert len(m4(torch.randn(1, 4, 32, 32))) == 4


def test_frozen_stages_and_pos_embed_resize_on_load(tmp_path):
    m = PVT(arch=dict(TINY), frozen_stages=1)
    m.train()
    assert not m.stages[1].training and m.stages[2].training
    assert not any(p.requires_grad for p in m.stages[0].parameters())
    assert all(p.requires_grad for p in m.stages[2].parameters())
    # a checkpoint laid out for 224 loads into a model laid out for 128 (bilinear resize)
    src = randomize(PVT(arch=dict(TINY)))
    path = str(tmp_path / 'mmdyn.pth')
    torch.save({'state_dict': src.state_dict(), 'meta': dict(epoch=3)}, path)
    dst = PVT(arch=dict(TINY), pretrain_img_size=128,
              init_cfg=dict(type='Pretrained', checkpoint=path))
    dst.init_weights()
    assert dst.stages[0].pos_embed.shape == (1, 32 * 32, 4)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(src.eval()(x), dst.eval()(x)):
            assert torch.allclose(a, b, atol=1e-5)


def _conv_weights(model):
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.parametrize('v2', [False, True])
def test_conv_weights_stay_channels_last(v2, tmp_path):
    """The convolutions read channels-last maps, so their weights are stored channels-last
    (no per-call weight copy): after building, initialising, loading a checkpoint saved in the
    default layout and a dtype change; the values are those of the default layout."""
    cl = torch.channels_last
    model = ours(v2)
    model.init_weights()
    weights = _conv_weights(model)
    # patch embeddings and strided spatial reductions: layouts that differ from the default
    assert any(w.shape[1] > 1 and w.shape[-1] > 1 for w in weights.values())
    assert all(w.is_contiguous(memory_format=cl) for w in weights.values())
    assert not all(w.is_contiguous() for w in weights.values())

    sd = {k: v.contiguous() for k, v in randomize(mmdet_pvt(v2)).state_dict().items()}
    torch.save(sd, tmp_path / 'default_layout.pth')
    model.load_state_dict(pvt_to_mmdyn(torch.load(tmp_path / 'default_layout.pth')))
    assert all(w.is_contiguous(memory_format=cl) for w in _conv_weights(model).values())
    plain = ours(v2)
    plain.load_state_dict(model.state_dict())
    for w in _conv_weights(plain).values():
        w.data = w.data.contiguous()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(x), plain(x)):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    model.double()
    assert all(w.dtype == torch.float64 and w.is_contiguous(memory_format=cl)
               for w in _conv_weights(model).values())
