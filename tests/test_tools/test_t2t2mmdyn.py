"""T2T-ViT checkpoints (the public code's and mmpretrain's layouts) into mmdyn's T2TViT host and
into every exit of a T2T-host DVT (mmdyn/models/backbones/t2t_vit.py, tools/model_converters/
t2t2mmdyn.py): strict loads with the official key set, outputs equal to an independent
functional forward of the official layout and to mmpretrain's T2T_ViT."""
import functools
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.backbones.t2t_vit import T2TViT, detect_t2t_layout, t2t_to_mmdyn
from mmdyn.models.classifiers.dvt import DVTClassifier

pytestmark = pytest.mark.usefixtures('one_thread')
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2)


@pytest.fixture
def tool(load_tool):
    return load_tool('tools/model_converters/t2t2mmdyn.py')


# ------------------------------------------------------------------ the public code's layout
def official_shapes(embed, depth, mlp_ratio, token_dims=8, k0=7, num_classes=10, n_pos=17,
                    performer=True):
    """Key -> shape of a checkpoint of the public T2T-ViT code (written from its structure)."""
    s = {}
    for i, d_in in ((1, 3 * k0 * k0), (2, token_dims * 9)):
        p = f'tokens_to_token.attention{i}.'
        s.update({p + 'norm1.weight': (d_in, ), p + 'norm1.bias': (d_in, ),
                  p + 'norm2.weight': (token_dims, ), p + 'norm2.bias': (token_dims, )})
        if performer:
            m = int(token_dims * 0.5)
            d = token_dims
            s.update({p + 'kqv.weight': (3 * d, d_in), p + 'kqv.bias': (3 * d, ),
                      p + 'proj.weight': (d, d), p + 'proj.bias': (d, ),
                      p + 'mlp.0.weight': (d, d), p + 'mlp.0.bias': (d, ),
                      p + 'mlp.2.weight': (d, d), p + 'mlp.2.bias': (d, ),
                      p + 'w': (m, d)})
        else:
            s.update({p + 'attn.qkv.weight': (3 * token_dims, d_in),
                      p + 'attn.proj.weight': (token_dims, token_dims),
                      p + 'attn.proj.bias': (token_dims, ),
                      p + 'mlp.fc1.weight': (token_dims, token_dims),
                      p + 'mlp.fc1.bias': (token_dims, ),
                      p + 'mlp.fc2.weight': (token_dims, token_dims),
                      p + 'mlp.fc2.bias': (token_dims, )})
    s['tokens_to_token.project.weight'] = (embed, token_dims * 9)
    s['tokens_to_token.project.bias'] = (embed, )
    s['cls_token'] = (1, 1, embed)
    s['pos_embed'] = (1, n_pos, embed)
    h = int(embed * mlp_ratio)
    for i in range(depth):
        p = f'blocks.{i}.'
        s.update({p + 'norm1.weight': (embed, ), p + 'norm1.bias': (embed, ),
                  p + 'attn.qkv.weight': (3 * embed, embed),
                  p + 'attn.proj.weight': (embed, embed), p + 'attn.proj.bias': (embed, ),
                  p + 'norm2.weight': (embed, ), p + 'norm2.bias': (embed, ),
                  p + 'mlp.fc1.weight': (h, embed), p + 'mlp.fc1.bias': (h, ),
                  p + 'mlp.fc2.weight': (embed, h), p + 'mlp.fc2.bias': (embed, )})
    s.update({'norm.weight': (embed, ), 'norm.bias': (embed, ), 'head.weight': (num_classes, embed),
              'head.bias': (num_classes, )})
    return s


def sinusoid(n, d):
    pos = np.arange(n)[:, None].astype(np.float64)
    j = np.arange(d)[None]
    ang = pos / np.power(10000, 2 * (j // 2) / d)
    ang[:, 0::2] = np.sin(ang[:, 0::2])
    ang[:, 1::2] = np.cos(ang[:, 1::2])
    return torch.tensor(ang, dtype=torch.float32)[None]


def official_checkpoint(shapes, seed=0, std=0.1):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shp in shapes.items():
        if k.endswith('.w'):  # fixed orthogonal random features, as the public code draws
            m, d = shp
            q = torch.linalg.qr(torch.randn(d, m, generator=g))[0].T
            sd[k] = q * math.sqrt(m)
        elif k == 'pos_embed':
            sd[k] = sinusoid(shp[1], shp[2])
        elif k.endswith('norm1.weight') or k.endswith('norm2.weight') or k == 'norm.weight':
            sd[k] = 1 + torch.randn(shp, generator=g) * std
        else:
            sd[k] = torch.randn(shp, generator=g) * std
    return sd


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'], eps=1e-5)


def _lin(x, sd, p):
    return F.linear(x, sd[p + 'weight'], sd.get(p + 'bias'))


def _performer(sd, p, x):
    x = _ln(x, sd, p + 'norm1.')
    d = sd[p + 'proj.weight'].shape[0]
    k, q, v = _lin(x, sd, p + 'kqv.').split(d, dim=-1)
    w = sd[p + 'w']
    m = w.shape[0]

    def phi(t):
        return torch.exp(torch.einsum('bti,mi->btm', t, w)
                         - (t * t).sum(-1, keepdim=True) / 2) / math.sqrt(m)

    kp, qp = phi(k), phi(q)
    den = torch.einsum('bti,bi->bt', qp, kp.sum(1))[..., None]
    y = torch.einsum('bti,bni->btn', qp, torch.einsum('bin,bim->bnm', v, kp)) / (den + 1e-8)
    y = v + _lin(y, sd, p + 'proj.')
    h = _lin(F.gelu(_lin(_ln(y, sd, p + 'norm2.'), sd, p + 'mlp.0.')), sd, p + 'mlp.2.')
    return y + h


def official_forward(sd, x, heads, k0=(7, 4, 2), qk_scale=None):
    """Logits of the public code's T2T-ViT (Performer tokens) from its state dict."""
    b = x.shape[0]
    t = F.unfold(x, k0[0], stride=k0[1], padding=k0[2]).transpose(1, 2)
    for i in (1, 2):
        t = _performer(sd, f'tokens_to_token.attention{i}.', t)
        g = int(round(math.sqrt(t.shape[1])))
        t = t.transpose(1, 2).reshape(b, -1, g, g)
        t = F.unfold(t, 3, stride=2, padding=1).transpose(1, 2)
    t = _lin(t, sd, 'tokens_to_token.project.')
    t = torch.cat([sd['cls_token'].expand(b, -1, -1), t], 1) + sd['pos_embed']
    c = t.shape[-1]
    hd = c // heads
    scale = qk_scale or hd ** -0.5
    i = 0
    while f'blocks.{i}.norm1.weight' in sd:
        p = f'blocks.{i}.'
        y = _ln(t, sd, p + 'norm1.')
        qkv = _lin(y, sd, p + 'attn.qkv.').reshape(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] * scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
        y = (a @ qkv[2]).transpose(1, 2).reshape(b, -1, c)
        t = t + _lin(y, sd, p + 'attn.proj.')
        y = _lin(F.gelu(_lin(_ln(t, sd, p + 'norm2.'), sd, p + 'mlp.fc1.')), sd, p + 'mlp.fc2.')
        t = t + y
        i += 1
    t = _ln(t, sd, 'norm.')
    return _lin(t[:, 0], sd, 'head.')


def test_official_key_set_loads_strictly_full_size():
    """The full T2T-ViT-12 and T2T-ViT-14 key sets of the public code map one to one onto
    mmdyn's T2TViT (strict load, every tensor used)."""
    for arch, embed, depth, mlp in (('t2t-vit-12', 256, 12, 2), ('t2t-vit-14', 384, 14, 3)):
        shapes = official_shapes(embed, depth, mlp, token_dims=64, num_classes=1000, n_pos=197)
        sd = {k: torch.zeros(s) for k, s in shapes.items()}
        assert detect_t2t_layout(sd) == 'official'
        conv = t2t_to_mmdyn({'state_dict_ema': {}, 'state_dict': sd})
        assert conv.pop('head.weight').shape == (1000, embed)
        conv.pop('head.bias')
        with torch.device('meta'):
            model = T2TViT(arch)
        own = model.state_dict()
        assert set(conv) == set(own)
        assert all(conv[k].shape == own[k].shape for k in own)
        n_src = sum(int(np.prod(s)) for k, s in shapes.items()
                    if k not in ('pos_embed', 'head.weight', 'head.bias'))
        assert n_src == sum(v.numel() for v in conv.values())


def test_official_layout_output_equality():
    """Converted weights give the same logits as the public code's forward (written here from
    its structure), also with the 'embed' qk scale its pretrained factories set."""
    shapes = official_shapes(16, 2, 2, token_dims=8, num_classes=10, n_pos=17)
    sd = official_checkpoint(shapes)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for qk_scale, ref_scale in ((None, None), ('embed', 16 ** -0.5)):
        model = T2TViT(TINY, img_size=64, token_dims=8, qk_scale=qk_scale)
        conv = t2t_to_mmdyn({'state_dict': sd})
        head_w, head_b = conv.pop('head.weight'), conv.pop('head.bias')
        model.load_state_dict(conv, strict=True)
        model.eval()
        with torch.no_grad():
            ours = F.linear(model(x)[0], head_w, head_b)
            ref = official_forward(sd, x, heads=2, qk_scale=ref_scale)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    # the position table the checkpoint stores is mmdyn's fixed one
    torch.testing.assert_close(model.pos_embed, sd['pos_embed'])


def _mmpretrain_t2t(seed=0):
    from mmpretrain.models.backbones import T2T_ViT
    from mmpretrain.models.utils.attention import (MultiheadAttention,
                                                   scaled_dot_product_attention_pyimpl)
    torch.manual_seed(seed)
    ref = T2T_ViT(img_size=64, embed_dims=16, num_layers=2, t2t_cfg=dict(token_dims=8),
                  layer_cfgs=dict(num_heads=2, feedforward_channels=32))
    # mmpretrain 1.2.0's MultiheadAttention, given a qk_scale (T2TTransformerLayer always gives
    # one), divides the logits by head_dims ** -0.5 instead of scaling them: set the scales
    # its T2TTransformerLayer documents (input_dims ** -0.5 in the token layers, head_dims **
    # -0.5 in the encoder), which are the public code's
    for m in ref.modules():
        if isinstance(m, MultiheadAttention):
            s = (m.input_dims // m.num_heads) ** -0.5 if m.v_shortcut else m.head_dims ** -0.5
            m.scaled_dot_product_attention = functools.partial(
                scaled_dot_product_attention_pyimpl, scale=1 / s)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    ref.eval()
    return ref


def test_mmpretrain_layout_output_equality():
    ref = _mmpretrain_t2t()
    ckpt = {'state_dict': {**{'backbone.' + k: v for k, v in ref.state_dict().items()},
                           'head.layers.head.weight': torch.randn(10, 16),
                           'head.layers.head.bias': torch.randn(10)}}
    assert detect_t2t_layout(ckpt['state_dict']) == 'mmpretrain'
    conv = t2t_to_mmdyn(ckpt)
    assert torch.equal(conv.pop('head.weight'), ckpt['state_dict']['head.layers.head.weight'])
    conv.pop('head.bias')
    model = T2TViT(TINY, img_size=64, token_dims=8, token_type='transformer')
    model.load_state_dict(conv, strict=True)
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x)[0], atol=1e-5, rtol=1e-4)


def test_init_cfg_and_tool_static_classifier(tool, tmp_path):
    """T2TViT(init_cfg=Pretrained) reads the public layout directly; the tool writes a static
    classifier (backbone + VisionTransformerClsHead) that loads strictly and gives the same
    logits."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    shapes = official_shapes(16, 2, 2, token_dims=8, num_classes=10, n_pos=17)
    sd = official_checkpoint(shapes, seed=3)
    src = tmp_path / 'T2T_ViT_tiny.pth.tar'
    torch.save({'state_dict': sd, 'epoch': 300}, src)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = official_forward(sd, x, heads=2)
    bb = T2TViT(TINY, img_size=64, token_dims=8,
                init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    bb.init_weights()
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(F.linear(bb(x)[0], sd['head.weight'], sd['head.bias']), ref,
                                   atol=1e-5, rtol=1e-4)
    dst = tmp_path / 'static.pth'
    assert tool.main([str(src), str(dst)]) == 0
    init_default_scope('mmpretrain')
    clf = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='mmdyn.T2TViT', arch=TINY, img_size=64, token_dims=8),
        head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=16)))
    out = torch.load(dst, map_location='cpu', weights_only=False)
    assert out['meta']['converted_from'] == 'official'
    clf.load_state_dict(out['state_dict'], strict=True)
    clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf(x, mode='tensor'), ref, atol=1e-5, rtol=1e-4)



def test_ema_weights_or_a_clear_refusal(tool, tmp_path, capsys, monkeypatch):
    """``--ema`` converts a timm checkpoint's ``state_dict_ema`` (not its ``state_dict``); on a
    checkpoint without one it is one error line and no file (was: the plain weights, silently)."""
    shapes = official_shapes(16, 2, 2, token_dims=8, num_classes=10, n_pos=17)
    plain, ema = official_checkpoint(shapes, seed=3), official_checkpoint(shapes, seed=4)
    src = tmp_path / 'timm.pth.tar'
    torch.save({'state_dict': plain, 'state_dict_ema': ema}, src)
    for flag, ref in (([], plain), (['--ema'], ema)):
        dst = tmp_path / f'out{len(flag)}.pth'
        assert tool.main([str(src), str(dst), *flag]) == 0
        out = torch.load(dst, map_location='cpu', weights_only=False)['state_dict']
        torch.testing.assert_close(out['head.layers.head.weight'], ref['head.weight'])
        torch.testing.assert_close(out['backbone.cls_token'], ref['cls_token'])
    src = tmp_path / 'no_ema.pth.tar'
    torch.save({'state_dict': plain}, src)
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    with pytest.raises(SystemExit) as e:
        tool.main([str(src), str(tmp_path / 'x.pth'), '--ema'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'has no state_dict_ema' in err.splitlines()[-1], err
    assert not (tmp_path / 'x.pth').exists()

T2T_TINY_EXITS = [dict(grid=2, soft_split=(14, 8, 3)), dict(grid=4, soft_split=(7, 4, 2))]


def tiny_dvt(init=None, feature_reuse=False, relation_reuse=False):
    m = DVTClassifier(arch=TINY, exits=T2T_TINY_EXITS, host='t2t', img_size=64,
                      num_classes=10, feature_reuse=feature_reuse,
                      relation_reuse=relation_reuse, thresholds=[1.0],
                      backbone_cfg=dict(token_dims=8),
                      init_cfg=None if init is None else dict(type='Pretrained',
                                                              checkpoint=str(init)))
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('layout', ['official', 'tool'])
def test_dvt_exits_from_t2t_checkpoint(tool, tmp_path, layout):
    """Every exit starts from the same T2T-ViT: the exit with the checkpoint's soft split (and
    no reuse) equals the source model; the 2x2 exit's first token layer is the resampled
    kernel; with feature reuse, the widened FFN input starts with zero weights."""
    shapes = official_shapes(16, 2, 2, token_dims=8, num_classes=10, n_pos=17)
    sd = official_checkpoint(shapes, seed=5)
    src = tmp_path / 't2t.pth'
    torch.save({'state_dict': sd}, src)
    if layout == 'tool':
        dst = tmp_path / 'dvt.pth'
        assert tool.main([str(src), str(dst), '--dvt-exits', '2']) == 0
        src = dst
    model = tiny_dvt(src)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    from mmdyn.models.utils.dynamic import full_compute
    with torch.no_grad(), full_compute(model):
        logits = model(x, mode='tensor')
        ref = official_forward(sd, x, heads=2)
    torch.testing.assert_close(logits[1], ref, atol=1e-5, rtol=1e-4)
    e0 = model.exits[0].backbone
    # 14x14 kernel resampled from the 7x7 one; the scaled projection keeps a constant patch's
    # response
    assert e0.token1.kqv.weight.shape == (24, 3 * 14 * 14)
    w7 = sd['tokens_to_token.attention1.kqv.weight'].reshape(24, 3, 7, 7)
    w14 = e0.token1.kqv.weight.reshape(24, 3, 14, 14)
    # reference: separable linear interpolation at 14 evenly spaced points of the 7x7 grid,
    # times (7 / 14) ** 2
    pos = np.linspace(0, 6, 14)
    w = w7.numpy().astype(np.float64)
    w = np.apply_along_axis(lambda r: np.interp(pos, np.arange(7), r), 3, w)
    w = np.apply_along_axis(lambda c: np.interp(pos, np.arange(7), c), 2, w)
    torch.testing.assert_close(w14, torch.tensor(w / 4, dtype=torch.float32), atol=1e-6,
                               rtol=1e-5)
    for k in range(2):  # the ImageNet head of the checkpoint in every exit
        torch.testing.assert_close(model.exits[k].head.fc.weight, sd['head.weight'])
        torch.testing.assert_close(model.exits[k].backbone.blocks[1].attn.proj.weight,
                                   sd['blocks.1.attn.proj.weight'])
    fr = tiny_dvt(tmp_path / 't2t.pth', feature_reuse=True)
    blk = fr.exits[1].backbone.blocks[0]
    assert blk.ffn.fc1.weight.shape == (32, 16 + 48)
    torch.testing.assert_close(blk.ffn.fc1.weight[:, :16], sd['blocks.0.mlp.fc1.weight'])
    assert torch.all(blk.ffn.fc1.weight[:, 16:] == 0)
    torch.testing.assert_close(blk.norm2.weight[:16], sd['blocks.0.norm2.weight'])
    assert torch.all(blk.norm2.weight[16:] == 1) and torch.all(blk.norm2.bias[16:] == 0)


def test_public_dvt_t2t_checkpoint(tmp_path, public_dvt_layout):
    """The public DVT code's T2T-ViT releases (DVT_T2t_vit_12/14 layout) load into a T2T-host
    DVTClassifier with both reuses and compute the same."""
    exits = [dict(grid=2, soft_split=(14, 8, 3)), dict(grid=3, soft_split=(11, 5, 2)),
             dict(grid=4, soft_split=(7, 4, 2))]

    def build(init=None):
        m = DVTClassifier(arch=TINY, exits=exits, host='t2t', img_size=64, num_classes=10,
                          thresholds=[1.0, 1.0], backbone_cfg=dict(token_dims=8),
                          init_cfg=init)
        m.init_weights()
        return m.eval()

    torch.manual_seed(0)
    src = build()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in src.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1 if 'norm' in name and
                                                               name.endswith('weight') else 0))
    path = tmp_path / 'DVT_T2t_vit_tiny.pth'
    torch.save(dict(model_state_dict=public_dvt_layout(src), flops=[1., 2., 3.]), path)
    torch.manual_seed(1)
    dst = build(dict(type='Pretrained', checkpoint=str(path)))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        for a, b in zip(src.run_all(x), dst.run_all(x)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for k in range(3):
        torch.testing.assert_close(dst.exits[k].backbone.token1.w, src.exits[k].backbone.token1.w)
