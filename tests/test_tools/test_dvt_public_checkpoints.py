"""The public DVT code's released checkpoints (blackfeather-wang/Dynamic-Vision-Transformer:
DVT_T2t_vit_12, DVT_T2t_vit_14, DVT_Deit_small), written here in their layout from the
structure of the public modules (models/t2t_vit.py, models/transformer_block.py,
models/token_performer.py, models_deit.py, timm/models/vision_transformer.py of that repository),
converted by tools/model_converters/t2t2mmdyn.py and loaded strictly.

* full-size key sets and shapes of the three releases = the configs' models, element counts
  conserved (only the T2T exits' fixed sinusoidal position tables are dropped);
* tiny cascades of both hosts with both reuses: the converted model's logits at every exit
  equal an independent functional forward of the public layout (written below from the public
  code's structure, not from mmdyn);
* a missing or unexpected key is an error; the released thresholds map to ours.
"""
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmdyn.models.classifiers.dvt import (MAX_EXIT_THRESHOLD, DVTClassifier,
                                          dvt_official_to_mmdyn, official_thresholds)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NAMES = ('less_less_token', 'less_token', 'normal_token')


@pytest.fixture
def tool(load_tool):
    return load_tool('tools/model_converters/t2t2mmdyn.py')


# ------------------------------------------------------------------ the public layout
def exit_shapes(host, embed, depth, heads, mlp_ratio, n_tokens, num_classes, feature_reuse,
                relation_reuse, token_dims=64, k0=7, patch=16):
    """Key -> shape of one exit module of the public DVT code."""
    s = {'cls_token': (1, 1, embed), 'pos_embed': (1, n_tokens, embed)}
    if host == 't2t':  # T2T_module with two Token_performer layers
        for i, d_in in ((1, 3 * k0 * k0), (2, token_dims * 9)):
            p = f'tokens_to_token.attention{i}.'
            t = token_dims
            s.update({p + 'kqv.weight': (3 * t, d_in), p + 'kqv.bias': (3 * t, ),
                      p + 'proj.weight': (t, t), p + 'proj.bias': (t, ),
                      p + 'norm1.weight': (d_in, ), p + 'norm1.bias': (d_in, ),
                      p + 'norm2.weight': (t, ), p + 'norm2.bias': (t, ),
                      p + 'mlp.0.weight': (t, t), p + 'mlp.0.bias': (t, ),
                      p + 'mlp.2.weight': (t, t), p + 'mlp.2.bias': (t, ),
                      p + 'w': (int(t * 0.5), t)})
        s['tokens_to_token.project.weight'] = (embed, token_dims * 9)
        s['tokens_to_token.project.bias'] = (embed, )
    else:  # timm PatchEmbed
        s['patch_embed.proj.weight'] = (embed, 3, patch, patch)
        s['patch_embed.proj.bias'] = (embed, )
    hid = int(embed * mlp_ratio)
    ffn_in = embed + 48 if feature_reuse else embed
    for i in range(depth):
        p = f'blocks.{i}.'
        s.update({p + 'norm1.weight': (embed, ), p + 'norm1.bias': (embed, ),
                  p + 'attn.qkv.weight': (3 * embed, embed),
                  p + 'attn.proj.weight': (embed, embed), p + 'attn.proj.bias': (embed, ),
                  p + 'norm2.weight': (ffn_in, ), p + 'norm2.bias': (ffn_in, ),
                  p + 'mlp.fc1.weight': (hid, ffn_in), p + 'mlp.fc1.bias': (hid, ),
                  p + 'mlp.fc2.weight': (embed, hid), p + 'mlp.fc2.bias': (embed, )})
        if host == 'deit':  # qkv_bias=True in models_deit.py
            s[p + 'attn.qkv.bias'] = (3 * embed, )
        if feature_reuse:
            q = p + 'feature_resuse_mlp.'
            s.update({q + '0.weight': (embed, ), q + '0.bias': (embed, ),
                      q + '1.fc1.weight': (128, embed), q + '1.fc1.bias': (128, ),
                      q + '1.fc2.weight': (48, 128), q + '1.fc2.bias': (48, )})
    s.update({'norm.weight': (embed, ), 'norm.bias': (embed, ),
              'head.weight': (num_classes, embed), 'head.bias': (num_classes, )})
    if relation_reuse:
        c = heads * depth
        s.update({'relation_reuse_conv.0.weight': (3 * c, c, 1, 1),
                  'relation_reuse_conv.0.bias': (3 * c, ),
                  'relation_reuse_conv.2.weight': (c, 3 * c, 1, 1),
                  'relation_reuse_conv.2.bias': (c, )})
    return s


def public_shapes(host, embed, depth, heads, mlp_ratio, grids, num_classes, token_dims=64,
                  t2t_kernels=(14, 11, 7), patches=(32, 23, 16)):
    out = {}
    for k, name in enumerate(NAMES):
        reuse = k > 0
        sh = exit_shapes(host, embed, depth, heads, mlp_ratio, grids[k]**2 + 1, num_classes,
                         reuse, reuse, token_dims, t2t_kernels[k], patches[k])
        out.update({f'{name}.{key}': v for key, v in sh.items()})
    return out


def sinusoid(n, d):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None]
    ang = pos / torch.pow(10000., 2 * torch.div(j, 2, rounding_mode='floor') / d)
    tab = ang.clone()
    tab[:, 0::2] = torch.sin(ang[:, 0::2])
    tab[:, 1::2] = torch.cos(ang[:, 1::2])
    return tab[None].float()


def random_checkpoint(shapes, host, seed=0, std=0.1):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shp in shapes.items():
        if k.endswith('.w'):
            m, d = shp
            sd[k] = torch.linalg.qr(torch.randn(d, m, generator=g))[0].T * math.sqrt(m)
        elif k.endswith('pos_embed') and host == 't2t':
            sd[k] = sinusoid(shp[1], shp[2])
        elif 'norm' in k and k.endswith('weight') or k.endswith('resuse_mlp.0.weight'):
            sd[k] = 1 + torch.randn(shp, generator=g) * std
        else:
            sd[k] = torch.randn(shp, generator=g) * std
    return sd


# ------------------------------------------------------------------ independent forward
def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'], eps=eps)


def _lin(x, sd, p):
    return F.linear(x, sd[p + 'weight'], sd.get(p + 'bias'))


def _performer(sd, p, x):
    x = _ln(x, sd, p + 'norm1.', 1e-5)
    t = sd[p + 'proj.weight'].shape[0]
    k, q, v = _lin(x, sd, p + 'kqv.').split(t, dim=-1)
    w = sd[p + 'w']

    def prm(z):
        return torch.exp(torch.einsum('bti,mi->btm', z, w)
                         - (z * z).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])

    kp, qp = prm(k), prm(q)
    den = torch.einsum('bti,bi->bt', qp, kp.sum(1))[..., None]
    y = torch.einsum('bti,bni->btn', qp, torch.einsum('bin,bim->bnm', v, kp)) / (den + 1e-8)
    y = v + _lin(y, sd, p + 'proj.')
    return y + _lin(F.gelu(_lin(_ln(y, sd, p + 'norm2.', 1e-5), sd, p + 'mlp.0.')), sd,
                    p + 'mlp.2.')


def _resize(t, new):
    """The public code's grid resize: nearest to twice the old side (14 for 7 -> 10, 20 for
    10 -> 14), then adaptive average pooling to the new side."""
    old = t.shape[-1]
    return F.adaptive_avg_pool2d(F.interpolate(t, (2 * old, 2 * old), mode='nearest'), new)


def public_exit(sd, x, host, heads, split, patch, feats=None, rels=None):
    """One exit of the public code: logits, final-block tokens, per-block relations."""
    b = x.shape[0]
    eps = 1e-5 if host == 't2t' else 1e-6
    if host == 't2t':
        t = F.unfold(x, split[0], stride=split[1], padding=split[2]).transpose(1, 2)
        for i in (1, 2):
            t = _performer(sd, f'tokens_to_token.attention{i}.', t)
            g = int(round(math.sqrt(t.shape[1])))
            t = t.transpose(1, 2).reshape(b, -1, g, g)
            t = F.unfold(t, 3, stride=2, padding=1).transpose(1, 2)
        t = _lin(t, sd, 'tokens_to_token.project.')
    else:
        t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                     stride=patch[0], padding=patch[1]).flatten(2).transpose(1, 2)
    t = torch.cat([sd['cls_token'].expand(b, -1, -1), t], 1) + sd['pos_embed']
    n, c = t.shape[1], t.shape[2]
    new = int(round(math.sqrt(n - 1)))
    depth = 0
    while f'blocks.{depth}.norm1.weight' in sd:
        depth += 1
    bias = None
    if rels is not None:  # relation reuse (forward_features of the public exits)
        r = torch.cat(rels, 1)
        r = F.conv2d(F.gelu(F.conv2d(r, sd['relation_reuse_conv.0.weight'],
                                     sd['relation_reuse_conv.0.bias'])),
                     sd['relation_reuse_conv.2.weight'], sd['relation_reuse_conv.2.bias'])
        bb, hh, n0, hw = r[:, :, :, 1:].shape
        s0 = int(round(math.sqrt(hw)))
        tmp = _resize(r[:, :, :, 1:].reshape(-1, n0, s0, s0), new).reshape(-1, n0, new * new)
        tmp = torch.cat([r[:, :, :, 0].reshape(-1, n0, 1), tmp], 2).transpose(1, 2)
        cls_col, tmp = tmp[:, :, :1], tmp[:, :, 1:]
        tmp = _resize(tmp.reshape(-1, n, s0, s0), new).reshape(-1, n, new * new)
        tmp = torch.cat([cls_col, tmp], 2).transpose(1, 2).reshape(bb, -1, n, n)
        bias = tmp.chunk(depth, 1)
    hd = c // heads
    relations = []
    for i in range(depth):
        p = f'blocks.{i}.'
        y = _ln(t, sd, p + 'norm1.', eps)
        qkv = _lin(y, sd, p + 'attn.qkv.').reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        a = (qkv[0] @ qkv[1].transpose(-2, -1)) * hd ** -0.5
        if bias is not None:
            a = a + bias[i]
        relations.append(a)
        y = (a.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(b, n, c)
        t = t + _lin(y, sd, p + 'attn.proj.')
        z = t
        if feats is not None:
            q = p + 'feature_resuse_mlp.'
            f = _ln(feats, sd, q + '0.', eps)
            f = _lin(F.gelu(_lin(f, sd, q + '1.fc1.')), sd, q + '1.fc2.')[:, 1:]
            s0 = int(round(math.sqrt(f.shape[1])))
            f = f.transpose(1, 2).reshape(b, 48, s0, s0)
            f = _resize(f, new).reshape(b, 48, new * new).transpose(1, 2)
            z = torch.cat([t, torch.cat([torch.zeros(b, 1, 48), f], 1)], 2)
        z = _lin(F.gelu(_lin(_ln(z, sd, p + 'norm2.', eps), sd, p + 'mlp.fc1.')), sd,
                 p + 'mlp.fc2.')
        t = t + z
    logits = _lin(_ln(t, sd, 'norm.', eps)[:, 0], sd, 'head.')
    return logits, t, relations


def public_forward(sd, x, host, heads, splits, patches):
    outs, feats, rels = [], None, None
    for k, name in enumerate(NAMES):
        sub = {key[len(name) + 1:]: v for key, v in sd.items() if key.startswith(name + '.')}
        logits, feats_k, rels_k = public_exit(sub, x, host, heads, splits[k], patches[k],
                                              feats, rels)
        outs.append(logits)
        feats, rels = feats_k, rels_k
    return outs


# ------------------------------------------------------------------ tests
TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2)
SPLITS = ((14, 8, 3), (11, 6, 5), (7, 4, 2))  # the public code's soft splits, here at 64 px
PATCHES = ((32, 0), (23, 3), (16, 0))  # the public DeiT tokenizers (kernel = stride, padding)


def tiny_model(host, init=None):
    if host == 't2t':
        exits = [dict(grid=g, soft_split=s) for g, s in zip((2, 3, 4), SPLITS)]
        kw = dict(host='t2t', img_size=64, backbone_cfg=dict(token_dims=8))
    else:
        exits = [dict(grid=2, patch_size=32, input_size=64),
                 dict(grid=3, patch_size=23, patch_pad=3, input_size=64),
                 dict(grid=4, patch_size=16)]
        kw = dict(backbone_cfg=dict(qkv_bias=True))
    m = DVTClassifier(arch=TINY, exits=exits, num_classes=10, thresholds=[1.0, 1.0],
                      init_cfg=None if init is None else dict(type='Pretrained',
                                                              checkpoint=str(init)), **kw)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('host', ['t2t', 'deit'])
def test_tiny_public_checkpoint_equals_public_forward(tool, tmp_path, host):
    shapes = public_shapes(host, 16, 2, 2, 2, (2, 3, 4), 10, token_dims=8,
                           patches=(32, 23, 16))
    sd = random_checkpoint(shapes, host, seed=3)
    src = tmp_path / f'DVT_{host}_tiny.pth.tar'
    torch.save(dict(model_state_dict=sd, flops=[0.1, 0.2, 0.3],
                    anytime_classification=[1., 2., 3.],
                    dynamic_threshold=torch.zeros(59, 3),
                    budgeted_batch_classification=[[1.], [2.]]), src)
    dst = tmp_path / 'converted.pth'
    assert tool.main([str(src), str(dst)]) == 0
    out = torch.load(dst, map_location='cpu', weights_only=False)
    assert out['meta']['converted_from'] == 'dvt-official'
    model = tiny_model(host)
    missing, unexpected = model.load_state_dict(out['state_dict'], strict=False)
    assert missing == [] and unexpected == []
    # every source tensor used once (T2T: the fixed sinusoidal tables are dropped)
    n_src = sum(v.numel() for k, v in sd.items() if not (host == 't2t' and 'pos_embed' in k))
    assert n_src == sum(v.numel() for v in out['state_dict'].values())
    # compared in float64: with these random weights float32 round-off through the relation
    # reuse reaches 5e-5 at the last exit, in the public forward as in ours; in float64 both
    # agree to 1e-12
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)).double()
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        ref = public_forward(sd64, x, host, 2, SPLITS, PATCHES)
        ours = model.double().run_all(x)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # the same file given to the model directly (init_cfg=Pretrained) converts on load
    direct = tiny_model(host, init=src).double()
    with torch.no_grad():
        for a, b in zip(direct.run_all(x), ref):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


RELEASES = {  # config, host, embed, depth, heads, mlp ratio
    'DVT_T2t_vit_12': ('dvt_t2t-vit-12_8xb128_in1k.py', 't2t', 256, 12, 4, 2),
    'DVT_T2t_vit_14': ('dvt_t2t-vit-14_8xb64_in1k.py', 't2t', 384, 14, 6, 3),
    'DVT_Deit_small': ('dvt_deit-s_8xb128_in1k.py', 'deit', 384, 12, 6, 4),
}


@pytest.mark.parametrize('release', sorted(RELEASES))
def test_full_size_release_key_sets(release):
    """The whole key set of each released file converts onto the model of its config: no
    missing and no unexpected key, same shapes, every element used."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg_name, host, embed, depth, heads, mlp = RELEASES[release]
    shapes = public_shapes(host, embed, depth, heads, mlp, (7, 10, 14), 1000)
    sd = {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    conv = dvt_official_to_mmdyn({'model_state_dict': sd, 'flops': [1., 2., 3.]})
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dvt', cfg_name))
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        model = MODELS.build(dict(cfg.model, thresholds_file=None, init_cfg=None))
    own = model.state_dict()
    assert sorted(conv) == sorted(own)
    assert all(conv[k].shape == own[k].shape for k in own)
    dropped = sum(math.prod(s) for k, s in shapes.items() if host == 't2t' and 'pos_embed' in k)
    assert sum(math.prod(s) for s in shapes.values()) - dropped == \
        sum(v.numel() for v in conv.values())


def test_mismatched_or_incomplete_checkpoints_are_errors(tmp_path):
    shapes = public_shapes('t2t', 16, 2, 2, 2, (2, 3, 4), 10, token_dims=8)
    sd = random_checkpoint(shapes, 't2t')
    # an unrecognised tensor of an exit is not dropped silently
    bad = dict(sd, **{'less_token.dist_token': torch.ones(1, 1, 16)})
    with pytest.raises(ValueError, match='unrecognised'):
        dvt_official_to_mmdyn({'model_state_dict': bad})
    # one the converter passes through is an unexpected key of the model
    src = tmp_path / 'extra.pth'
    torch.save({'model_state_dict': dict(sd, **{'less_token.blocks.0.attn.gamma':
                                                torch.ones(16)})}, src)
    with pytest.raises(ValueError, match='unexpected'):
        tiny_model('t2t', init=src)
    # an exit missing for the requested count
    part = {k: v for k, v in sd.items() if not k.startswith('normal_token.')}
    with pytest.raises(ValueError, match='missing'):
        dvt_official_to_mmdyn({'model_state_dict': part}, 3)
    # fewer exits than the file has: the last exit's reuse modules would read another exit
    with pytest.raises(ValueError, match='has 3 exits .*keeping 2 would not be its model'):
        dvt_official_to_mmdyn({'model_state_dict': sd}, 2)
    # a checkpoint of another architecture: missing / unexpected keys, not a warning
    src = tmp_path / 'noreuse.pth'
    no_rel = {k: v for k, v in sd.items() if 'relation_reuse_conv' not in k}
    torch.save({'model_state_dict': no_rel}, src)
    with pytest.raises(ValueError, match='missing keys'):
        tiny_model('t2t', init=src)


def test_fewer_exits_than_the_file_is_one_line(tool, tmp_path, capsys, monkeypatch):
    """``t2t2mmdyn.py --dvt-exits 2`` on a 3-exit public file: exit status 2 and one line (not
    a traceback, not a model whose last exit reads features it was not trained on)."""
    shapes = public_shapes('t2t', 16, 2, 2, 2, (2, 3, 4), 10, token_dims=8)
    src = tmp_path / 'dvt3.pth.tar'
    torch.save(dict(model_state_dict=random_checkpoint(shapes, 't2t')), src)
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    with pytest.raises(SystemExit) as e:
        tool.main([str(src), str(tmp_path / 'out.pth'), '--dvt-exits', '2'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1
    assert err.startswith('t2t2mmdyn.py: error: the DVT checkpoint has 3 exits')
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('args, msg', [
    (['--dvt-exits', '1'], '--dvt-exits must be >= 2'),
    (['--dvt-exits', '-1'], '--dvt-exits must be >= 2'),
    (['--thresholds-out', 'th.json'], '--thresholds-out needs --budget-level'),
    (['--budget-level', '5'], '--budget-level is read only with --thresholds-out'),
    (['--thresholds-out', 'th.json', '--budget-level', '60'], 'budget level must be in 1..59'),
    (['--ema'], '--ema: a public DVT checkpoint holds one set of weights'),
])
def test_bad_arguments_write_nothing(tool, tmp_path, capsys, monkeypatch, args, msg):
    """Each bad option of t2t2mmdyn.py: exit status 2 and one line, before any file is
    written (an empty or 1-exit checkpoint, or a checkpoint without its thresholds)."""
    shapes = public_shapes('t2t', 16, 2, 2, 2, (2, 3, 4), 10, token_dims=8)
    src = tmp_path / 'dvt3.pth.tar'
    torch.save(dict(model_state_dict=random_checkpoint(shapes, 't2t'),
                    dynamic_threshold=torch.zeros(59, 3)), src)
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        tool.main([str(src), 'out.pth', *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err.splitlines()[-1], err
    assert not (tmp_path / 'out.pth').exists() and not (tmp_path / 'th.json').exists()


def test_released_thresholds(tool, tmp_path):
    """dynamic_threshold[level - 1] of a public file -> our thresholds: T > 1 (the public
    "none found", 1e8) is 1.0 (nobody stops), T = 1.0 the largest float below 1 (admits a
    confidence of exactly 1.0, as the public ``>=``), other values as they are; the last
    column (-1e8) is the last exit, which takes the rest."""
    table = torch.zeros(59, 3)
    table[0] = torch.tensor([1e8, 0.7, -1e8])
    table[4] = torch.tensor([0.93, 1.0, -1e8])
    ckpt = {'dynamic_threshold': table}
    assert official_thresholds(ckpt, 1) == [1.0, pytest.approx(0.7)]
    assert official_thresholds(ckpt, 5) == [pytest.approx(0.93), MAX_EXIT_THRESHOLD]
    with pytest.raises(ValueError, match='budget level'):
        official_thresholds(ckpt, 60)
    shapes = public_shapes('t2t', 16, 2, 2, 2, (2, 3, 4), 10, token_dims=8)
    src = tmp_path / 'dvt.pth.tar'
    torch.save(dict(model_state_dict=random_checkpoint(shapes, 't2t'), dynamic_threshold=table,
                    flops=[0.5, 1.5, 3.5]), src)
    th = tmp_path / 'work' / 'thresholds.json'
    assert tool.main([str(src), str(tmp_path / 'c.pth'), '--thresholds-out', str(th),
                        '--budget-level', '5']) == 0
    data = json.loads(th.read_text())
    assert data['thresholds'] == [pytest.approx(0.93), MAX_EXIT_THRESHOLD]
    assert data['public_cumulative_gflops'] == [0.5, 1.5, 3.5]
    model = DVTClassifier(arch=TINY, exits=[dict(grid=g, soft_split=s) for g, s in
                                            zip((2, 3, 4), SPLITS)],
                          host='t2t', img_size=64, num_classes=10,
                          backbone_cfg=dict(token_dims=8), thresholds_file=str(th))
    assert model.thresholds == data['thresholds']
