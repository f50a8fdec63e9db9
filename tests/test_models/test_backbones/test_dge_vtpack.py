"""DGE as the authors' code (StevenGrove/vtpack) trains it: the straight-through scope of the
dense path, the budget conventions, the class token and LayerNorm eps of the official PVT v1
classifier, and whole-checkpoint conversion. Expected values are computed independently here
(plain pooling / repeat / sums, a functional reference forward), never by the code under test."""
import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.backbones.dge import DynamicGrainedEncoder
from mmdyn.models.layers.transformer_blocks import PVTBlock, ViTBlock


def _random_gate(enc, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        enc.gate.proj.weight.copy_(torch.randn(enc.gate.proj.weight.shape, generator=g))
        enc.gate.proj.bias.zero_()


def _mixed_choice(logits):
    """Region ``r`` (row-major over the batch) at granularity ``r mod K``."""
    n = logits[..., 0].numel()
    return (torch.arange(n) % logits.shape[-1]).reshape(logits.shape[:-1])


# ----------------------------------------------------------------------------- item 1
@pytest.mark.parametrize('host', ['pvt', 'vit'])
@pytest.mark.parametrize('path', ['dense', 'sparse'])
def test_soft_score_gradient_is_inner_product_with_unpooled_update(host, path):
    """Dense path (the authors' estimator): dL/d soft_k of a region is the sum over its tokens of
    <dL/dout, unpool(update_k)> for *every* candidate k; sparse path (selected-only): the same for
    the chosen k, zero for the others. ``update_k`` is computed here from plain average pooling
    of the map, the host block on those queries, and repeat-interleave un-pooling."""
    torch.manual_seed(0)
    c, hw, b = 8, (8, 8), 2
    ne = 1 if host == 'vit' else 0
    if host == 'pvt':
        blk = PVTBlock(c, 2, mlp_ratio=2, sr_ratio=2, use_conv_ffn=False)
    else:
        blk = ViTBlock(c, 2, mlp_ratio=2)
    blk.train()  # no dropout / drop path: deterministic
    enc = DynamicGrainedEncoder(c, (1, 2, 4), train_path=path).train()
    _random_gate(enc, 1)
    enc.forced_choice = _mixed_choice
    x = torch.randn(b, ne + hw[0] * hw[1], c)
    g_out = torch.randn(b, ne + hw[0] * hw[1], c)
    out, info = enc(blk, x, hw, ne)
    soft = info['soft']
    soft.retain_grad()
    (out * g_out).sum().backward()
    got = soft.grad  # [B, 2, 2, 3]

    with torch.no_grad():
        choice = info['choice']
        g_map = g_out[:, ne:].reshape(b, hw[0], hw[1], c)
        x_map = x[:, ne:].reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        expected = torch.zeros(b, 2, 2, 3)
        for k, p in enumerate((1, 2, 4)):
            q = F.avg_pool2d(x_map, p).flatten(2).transpose(1, 2)  # [B, n_p, C]
            q_in = torch.cat([x[:, :ne], q], 1)
            upd = (blk(x, hw, query=q_in) - q_in)[:, ne:]
            side = hw[0] // p
            up = upd.reshape(b, side, side, c).repeat_interleave(p, 1).repeat_interleave(p, 2)
            inner = (g_map * up).sum(-1)  # [B, H, W]
            expected[..., k] = inner.reshape(b, 2, 4, 2, 4).sum((2, 4))
        if path == 'sparse':
            expected = expected * F.one_hot(choice, 3)
    assert choice.unique().numel() == 3  # every granularity is chosen somewhere
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), (got - expected).abs().max()
    if path == 'dense':  # the non-chosen candidates do receive a task gradient
        assert (got * (1 - F.one_hot(choice, 3))).abs().sum() > 1e-3


def test_dense_and_sparse_paths_have_the_same_forward():
    torch.manual_seed(0)
    blk = PVTBlock(8, 2, mlp_ratio=2, sr_ratio=2, use_conv_ffn=False).train()
    x = torch.randn(2, 64, 8)
    outs = []
    for path in ('dense', 'sparse'):
        enc = DynamicGrainedEncoder(8, (1, 2, 4), train_path=path).train()
        enc.forced_choice = _mixed_choice
        outs.append(enc(blk, x, (8, 8))[0])
    assert torch.allclose(outs[0], outs[1], atol=1e-6)


# ----------------------------------------------------------------------------- references
# A functional forward of the official PVT v1 / vtpack DGE-PVT and vtpack DGE-DeiT classifiers on
# their own key layout (eval: argmax gates), written from the published architecture.
EPS_AUX, EPS_BLOCK = 1e-5, 1e-6  # official: patch-embed / SR norms; block / final norms


def _ln(t, sd, pre, eps):
    return F.layer_norm(t, t.shape[-1:], sd[pre + '.weight'], sd[pre + '.bias'], eps)


def _lin(t, sd, pre):
    return F.linear(t, sd[pre + '.weight'], sd[pre + '.bias'])


def _attend(q_in, kv_in, sd, pre, heads, twice=True):
    """Multi-head attention of queries ``q_in`` [n, C] over keys/values ``kv_in`` [m, C]."""
    c = q_in.shape[-1]
    d = c // heads
    q = _lin(q_in, sd, pre + '.q').reshape(-1, heads, d).transpose(0, 1)
    k, v = _lin(kv_in, sd, pre + '.kv').reshape(-1, 2, heads, d).permute(1, 2, 0, 3)
    a = ((q @ k.transpose(-1, -2)) * d ** -0.5).softmax(-1)
    return _lin((a @ v).transpose(0, 1).reshape(-1, c), sd, pre + '.proj')


def _block(sd, pre, t, hw, extra, heads, sr, splits=None):
    """One (DGE) layer on one image's tokens ``t`` [E + H W, C]. Without ``splits`` every token
    is a query; with them the region gate picks a split count ``s`` per ``S x S`` region
    (``S = max(splits)``), the region's queries are the means of its ``(S/s) x (S/s)`` patches,
    and every token gets its patch's update."""
    c = t.shape[-1]
    h, w = hw
    kv_src = _ln(t, sd, pre + '.norm1', EPS_BLOCK)
    if sr > 1:
        m = kv_src[extra:].T.reshape(1, c, h, w)
        m = F.conv2d(m, sd[pre + '.attn.sr.weight'], sd[pre + '.attn.sr.bias'], stride=sr)
        kv_src = _ln(m.flatten(2)[0].T, sd, pre + '.attn.norm', EPS_AUX)
    if splits is None:
        groups = [[i] for i in range(t.shape[0])]
    else:
        size = max(splits)
        grid = t[extra:].reshape(h, w, c)
        logits = _lin(grid.reshape(h // size, size, w // size, size, c).mean((1, 3)), sd,
                      pre + '.dge.router.gate')
        groups = [[i] for i in range(extra)]
        for r in range(h // size):
            for cc in range(w // size):
                p = size // splits[int(logits[r, cc].argmax())]
                for pr in range(0, size, p):
                    for pc in range(0, size, p):
                        groups.append([extra + (r * size + pr + i) * w + cc * size + pc + j
                                       for i in range(p) for j in range(p)])
    q = torch.stack([t[g].mean(0) for g in groups])
    y = q + _attend(_ln(q, sd, pre + '.norm1', EPS_BLOCK), kv_src, sd, pre + '.attn', heads)
    hid = _lin(_ln(y, sd, pre + '.norm2', EPS_BLOCK), sd, pre + '.mlp.fc1')
    y = y + _lin(F.gelu(hid), sd, pre + '.mlp.fc2')
    out = t.clone()
    for g, d in zip(groups, y - q):
        out[g] = t[g] + d
    return out


def ref_pvt_classifier(sd, x, heads, srs, dge=False):
    """Logits of an official-layout PVT v1 (``dge``: vtpack DGE-PVT) classifier; the image is
    the size the position embeddings were laid out for."""
    splits = sd['block1.0.dge.splits'].tolist() if dge else None
    logits = []
    for img in x:
        t = img[None]
        for s in range(1, 5):
            w = sd[f'patch_embed{s}.proj.weight']
            m = F.conv2d(t, w, sd[f'patch_embed{s}.proj.bias'], stride=w.shape[-1])
            hw = m.shape[-2:]
            tok = _ln(m.flatten(2)[0].T, sd, f'patch_embed{s}.norm', EPS_AUX)
            extra = 0
            if s == 4:
                tok, extra = torch.cat([sd['cls_token'][0], tok]), 1
            tok = tok + sd[f'pos_embed{s}'][0]
            j = 0
            while f'block{s}.{j}.norm1.weight' in sd:
                tok = _block(sd, f'block{s}.{j}', tok, hw, extra, heads[s - 1], srs[s - 1], splits)
                j += 1
            t = tok.T.reshape(1, -1, *hw)
        logits.append(_lin(_ln(tok, sd, 'norm', EPS_BLOCK)[0], sd, 'head'))
    return torch.stack(logits)


def ref_deit_classifier(sd, x, heads):
    """Logits of a vtpack DGE-DeiT classifier (eval; without gates: its static DeiT)."""
    splits = sd['blocks.0.dge.splits'].tolist() if 'blocks.0.dge.splits' in sd else None
    logits = []
    for img in x:
        w = sd['patch_embed.proj.weight']
        m = F.conv2d(img[None], w, sd['patch_embed.proj.bias'], stride=w.shape[-1])
        hw = m.shape[-2:]
        tok = torch.cat([sd['cls_token'][0], m.flatten(2)[0].T]) + sd['pos_embed'][0]
        j = 0
        while f'blocks.{j}.norm1.weight' in sd:
            tok = _block(sd, f'blocks.{j}', tok, hw, 1, heads, 1, splits)
            j += 1
        logits.append(_lin(_ln(tok, sd, 'norm', EPS_BLOCK)[0], sd, 'head'))
    return torch.stack(logits)


# ----------------------------------------------------------------------------- checkpoints
PVT_ARCH = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 3, 4],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
DEIT_ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
IMG = 128  # maps 32, 16, 8, 4 (PVT) / 8 (DeiT, patch 16): every map divides by S = 4


def _gen(seed):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2, mean=0.0):
        return mean + torch.randn(shape, generator=g) * std
    return r


def _vt_block(r, sd, pre, c, hid, sr, dge, gate_std=1.0):
    for n in ('norm1', 'norm2'):
        sd[f'{pre}.{n}.weight'], sd[f'{pre}.{n}.bias'] = r(c, mean=1.0), r(c)
    sd[f'{pre}.attn.q.weight'], sd[f'{pre}.attn.q.bias'] = r(c, c), r(c)
    sd[f'{pre}.attn.kv.weight'], sd[f'{pre}.attn.kv.bias'] = r(2 * c, c), r(2 * c)
    sd[f'{pre}.attn.proj.weight'], sd[f'{pre}.attn.proj.bias'] = r(c, c), r(c)
    if sr > 1:
        sd[f'{pre}.attn.sr.weight'], sd[f'{pre}.attn.sr.bias'] = r(c, c, sr, sr), r(c)
        sd[f'{pre}.attn.norm.weight'], sd[f'{pre}.attn.norm.bias'] = r(c, mean=1.0), r(c)
    sd[f'{pre}.mlp.fc1.weight'], sd[f'{pre}.mlp.fc1.bias'] = r(hid, c), r(hid)
    sd[f'{pre}.mlp.fc2.weight'], sd[f'{pre}.mlp.fc2.bias'] = r(c, hid), r(c)
    if dge:
        sd[f'{pre}.dge.splits'] = torch.tensor([4, 2, 1])
        sd[f'{pre}.dge.router.gate.weight'] = r(3, c, std=gate_std)
        sd[f'{pre}.dge.router.gate.bias'] = r(3, std=0.1)


def vtpack_pvt_sd(dge=True, seed=0, classes=10):
    """Random weights in the official PVT v1 / vtpack ``pvt_dge_s124`` key layout."""
    r, sd, c_in, grid = _gen(seed), {}, 3, IMG
    a = PVT_ARCH
    for s in range(1, 5):
        c, p = a['embed_dims'][s - 1], 4 if s == 1 else 2
        grid //= p
        sd[f'patch_embed{s}.proj.weight'] = r(c, c_in, p, p)
        sd[f'patch_embed{s}.proj.bias'] = r(c)
        sd[f'patch_embed{s}.norm.weight'], sd[f'patch_embed{s}.norm.bias'] = r(c, mean=1.0), r(c)
        sd[f'pos_embed{s}'] = r(1, grid * grid + (s == 4), c)
        for j in range(a['depths'][s - 1]):
            _vt_block(r, sd, f'block{s}.{j}', c, c * a['mlp_ratios'][s - 1],
                      a['sr_ratios'][s - 1], dge)
        c_in = c
    sd['norm.weight'], sd['norm.bias'] = r(c_in, mean=1.0), r(c_in)
    sd['cls_token'] = r(1, 1, c_in)
    sd['head.weight'], sd['head.bias'] = r(classes, c_in), r(classes)
    return sd


def vtpack_deit_sd(seed=0, classes=10, dge=True):
    """Random weights in vtpack's ``deit_dge_s124`` key layout (separate q / kv)."""
    r, sd = _gen(seed), {}
    c, n = DEIT_ARCH['embed_dims'], (IMG // 16) ** 2
    sd['cls_token'], sd['pos_embed'] = r(1, 1, c), r(1, n + 1, c)
    sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'] = r(c, 3, 16, 16, std=0.05), r(c)
    for j in range(DEIT_ARCH['depth']):
        _vt_block(r, sd, f'blocks.{j}', c, c * DEIT_ARCH['mlp_ratio'], 1, dge)
    sd['norm.weight'], sd['norm.bias'] = r(c, mean=1.0), r(c)
    sd['head.weight'], sd['head.bias'] = r(classes, c), r(classes)
    return sd


def _classifier_from_config(name, arch, **backbone):
    """The model of an ImageNet config with a tiny arch, 10 classes."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    repo = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(repo, 'configs', 'dge', name))
    cfg.model.backbone.update(arch=arch, **backbone)
    cfg.model.head.update(num_classes=10, in_channels=32)
    cfg.model.pop('train_cfg', None)  # no batch augments
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def _convert_file(tmp_path, sd, tool, *args):
    import importlib.util
    import os.path as osp
    repo = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    src, dst = str(tmp_path / 'src.pth'), str(tmp_path / 'dst.pth')
    torch.save({'model': sd, 'epoch': 299}, src)  # as vtpack's / whai362's main.py save
    spec = importlib.util.spec_from_file_location(
        tool, osp.join(repo, 'tools', 'model_converters', f'{tool}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main([src, dst, *args])
    return torch.load(dst)['state_dict']


# ----------------------------------------------------------------------------- item 2
def _eps(model):
    from torch import nn
    return {n: m.eps for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}


def test_layernorm_eps_official_layout_and_mmdet_option():
    from mmdyn.models.backbones import PVT, PVTv2
    from mmdyn.models.backbones.dge import DGEPVT
    from mmdyn.models.backbones.pvt import MMDET_NORMS
    for cls in (PVT, DGEPVT):
        eps = _eps(cls(arch=dict(PVT_ARCH), cls_token=True))
        aux = {n: e for n, e in eps.items() if n.endswith(('patch_embed.norm', 'attn.norm'))}
        # 4 patch embeddings + the SR norms of stages 0-2 (sr > 1): 1 + 2 + 1 blocks
        assert len(aux) == 4 + 4 and set(aux.values()) == {1e-5}
        rest = {n: e for n, e in eps.items() if n not in aux}
        # block norms (2 per block, 5 blocks) and the final norm
        assert len(rest) == 11 and set(rest.values()) == {1e-6}
        assert set(_eps(cls(arch=dict(PVT_ARCH), **MMDET_NORMS)).values()) == {1e-6}
    assert set(_eps(PVTv2(arch='b0')).values()) == {1e-6}  # PVTv2 unchanged


# ----------------------------------------------------------------------------- items 2, 3
def test_official_pvt_classifier_same_logits(tmp_path):
    """An official whai362 PVT v1 classifier (class token, eps layout) through
    ``pvt2mmdyn.py --classifier`` into ``pvt-s_4xb256_in1k-256px.py``: the logits of a
    functional reference forward of the official model."""
    sd = vtpack_pvt_sd(dge=False)
    # low-contrast input, no bias in the first embedding: token variances near eps, so the
    # eps layout shows in the logits
    sd['patch_embed1.proj.bias'].zero_()
    conv = _convert_file(tmp_path, sd, 'pvt2mmdyn', '--classifier')
    model = _classifier_from_config('pvt-s_4xb256_in1k-256px.py', dict(PVT_ARCH),
                                    pretrain_img_size=IMG).eval()
    model.load_state_dict(conv, strict=True)
    assert model.backbone.cls_token.shape == (1, 1, 32)
    x = torch.randn(2, 3, IMG, IMG) * 0.01
    with torch.no_grad():
        got = model(x, mode='tensor')
        ref = ref_pvt_classifier(sd, x, PVT_ARCH['num_heads'], PVT_ARCH['sr_ratios'])
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()
    # the eps layout matters at this tolerance: mmdet's all-1e-6 gives other logits
    from mmdyn.models.backbones.pvt import MMDET_NORMS
    other = _classifier_from_config('pvt-s_4xb256_in1k-256px.py', dict(PVT_ARCH),
                                    pretrain_img_size=IMG, **MMDET_NORMS).eval()
    other.load_state_dict(conv, strict=True)
    with torch.no_grad():
        assert not torch.allclose(other(x, mode='tensor'), ref, rtol=1e-4, atol=1e-4)


def test_dense_configs_keep_no_class_token():
    from mmdyn.models.backbones.dge import DGEPVT
    model = DGEPVT(arch=dict(PVT_ARCH))
    assert not hasattr(model, 'cls_token')
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(8, 16, 16), (16, 8, 8), (24, 4, 4), (32, 2, 2)]


# ----------------------------------------------------------------------------- items 3, 5
def test_vtpack_dge_pvt_checkpoint_converts_whole_and_gives_same_logits(tmp_path, capsys):
    sd = vtpack_pvt_sd(dge=True)
    conv = _convert_file(tmp_path, sd, 'dge2mmdyn', '--classifier')
    assert 'dropped 5 non-trainable dge.splits' in capsys.readouterr().out
    gates = sorted(k for k in conv if '.gate.' in k)
    assert gates == sorted(f'backbone.dge.{s}.{j}.gate.proj.{t}' for s, d in enumerate([1, 2, 1, 1])
                           for j in range(d) for t in ('weight', 'bias'))
    # vtpack's gate 0 is split 4 (patch side 1, the finest): mmdyn's gate order, same rows
    assert torch.equal(conv['backbone.dge.1.1.gate.proj.weight'],
                       sd['block2.1.dge.router.gate.weight'])
    # every source tensor but the 5 splits has a place: 2 cls tensors from cls_token/pos_embed4
    assert len(conv) == len(sd) - 5 + 1
    model = _classifier_from_config('dge-pvt-s_4xb256_in1k-256px.py', dict(PVT_ARCH),
                                    pretrain_img_size=IMG).eval()
    model.load_state_dict(conv, strict=True)
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        got = model(x, mode='tensor')
        ref = ref_pvt_classifier(sd, x, PVT_ARCH['num_heads'], PVT_ARCH['sr_ratios'], dge=True)
    maps = model.backbone.last_maps
    assert len({int(v) for m in maps.values() for v in m.flatten()}) == 3  # mixed decisions
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()


def test_vtpack_dge_deit_checkpoint_converts_whole_and_gives_same_logits(tmp_path):
    sd = vtpack_deit_sd()
    conv = _convert_file(tmp_path, sd, 'dge2mmdyn', '--classifier')
    assert sorted(k for k in conv if '.gate.' in k) == [
        f'backbone.dge.{j}.gate.proj.{t}' for j in range(2) for t in ('bias', 'weight')]
    assert len(conv) == len(sd) - 2
    model = _classifier_from_config('dge-deit-s_4xb256_in1k-256px.py', dict(DEIT_ARCH),
                                    img_size=IMG).eval()
    model.load_state_dict(conv, strict=True)
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        got = model(x, mode='tensor')
        ref = ref_deit_classifier(sd, x, DEIT_ARCH['num_heads'])
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()


def vtpack_dpvt_sd(seed=0, classes=10, points=4):
    """Random weights in the key layout of vtpack's static DPVT (``dpvt_*_256``): deformable
    point attention (``attn.v``, ``attn.offsets``, ``attn.attn_weight``), no class token, a
    final ``norm`` before the average pooling."""
    r, sd, c_in, grid = _gen(seed), {}, 3, IMG
    a = PVT_ARCH
    for s in range(1, 5):
        c, p, heads = a['embed_dims'][s - 1], 4 if s == 1 else 2, a['num_heads'][s - 1]
        grid //= p
        sd[f'patch_embed{s}.proj.weight'] = r(c, c_in, p, p)
        sd[f'patch_embed{s}.proj.bias'] = r(c)
        sd[f'patch_embed{s}.norm.weight'], sd[f'patch_embed{s}.norm.bias'] = r(c, mean=1.0), r(c)
        sd[f'pos_embed{s}'] = r(1, grid * grid, c)
        for j in range(a['depths'][s - 1]):
            pre, hid = f'block{s}.{j}', c * a['mlp_ratios'][s - 1]
            for n in ('norm1', 'norm2'):
                sd[f'{pre}.{n}.weight'], sd[f'{pre}.{n}.bias'] = r(c, mean=1.0), r(c)
            for n, rows in (('v', c), ('attn_weight', heads * points),
                            ('offsets', heads * points * 2), ('proj', c)):
                sd[f'{pre}.attn.{n}.weight'], sd[f'{pre}.attn.{n}.bias'] = r(rows, c), r(rows)
            sd[f'{pre}.mlp.fc1.weight'], sd[f'{pre}.mlp.fc1.bias'] = r(hid, c), r(hid)
            sd[f'{pre}.mlp.fc2.weight'], sd[f'{pre}.mlp.fc2.bias'] = r(c, hid), r(c)
        c_in = c
    sd['norm.weight'], sd['norm.bias'] = r(c_in, std=0.5, mean=1.0), r(c_in, std=0.5)
    sd['head.weight'], sd['head.bias'] = r(classes, c_in), r(classes)
    return sd


@pytest.mark.parametrize('config', ['dpvt-s_4xb256_in1k-256px.py',
                                    'dge-dpvt-s_4xb256_in1k-256px.py'])
def test_vtpack_dpvt_classifier_norms_before_pooling(tmp_path, config):
    """vtpack's DPVT classifier: ``head(mean_tokens(LN_1e-6(stage-4 tokens)))``. The official
    layout through ``pvt2mmdyn.py --classifier`` loads whole into the ImageNet DPVT configs
    (DGE-DPVT: every region at the finest granularity is the static DPVT), and the logits are
    the head of the average of the normalised stage-4 tokens, computed here from the source
    tensors and the tokens the last block wrote."""
    sd = vtpack_dpvt_sd()
    conv = _convert_file(tmp_path, sd, 'pvt2mmdyn', '--classifier')
    assert len(conv) == len(sd)
    model = _classifier_from_config(config, dict(PVT_ARCH), pretrain_img_size=IMG).eval()
    missing, unexpected = model.load_state_dict(conv, strict=False)
    assert not unexpected and all('.gate.' in k for k in missing)
    bb = model.backbone
    if 'choice' in getattr(bb, 'OVERRIDE_KEYS', ()):
        bb.set_decision_override(dict(choice=0))
    seen = []
    hook = bb.stages[3].blocks[-1].register_forward_hook(lambda m, a, out: seen.append(out))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        got = model(x, mode='tensor')
    hook.remove()
    tokens = seen[-1]  # [B, 4*4, 32], before any final norm
    feat = F.layer_norm(tokens, (32, ), sd['norm.weight'], sd['norm.bias'], EPS_BLOCK).mean(1)
    want = F.linear(feat, sd['head.weight'], sd['head.bias'])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # without the final norm (the dense-prediction hosts' layout) the logits differ
    no_norm = F.linear(tokens.mean(1), sd['head.weight'], sd['head.bias'])
    assert (no_norm - want).abs().max() > 0.1


def test_dense_dpvt_configs_keep_no_final_norm():
    import os.path as osp

    from mmengine.config import Config

    from mmdyn.models.backbones.dge import DPVT
    repo = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    for name in ('fpn_dpvt-s_4xb8-80k_ade20k-512x512.py', 'mask-rcnn_dge-dpvt-s_fpn_1x_coco.py'):
        bb = Config.fromfile(osp.join(repo, 'configs', 'dge', name)).model.backbone
        assert not bb.get('final_norm') and not bb.get('cls_token')
    assert isinstance(DPVT(arch=dict(PVT_ARCH)).stages[3].norm, torch.nn.Identity)
    assert isinstance(DPVT(arch=dict(PVT_ARCH), final_norm=True).stages[3].norm,
                      torch.nn.LayerNorm)


def test_export_model_layout_and_init_cfg_loading(tmp_path):
    """vtpack's tools/export_model.py prefix; loading through init_cfg takes the gates too."""
    from mmdyn.models.backbones.dge import DGEPVT
    sd = vtpack_pvt_sd(dge=True)
    path = str(tmp_path / 'exported.pth')
    torch.save({'model': {f'backbone.bottom_up.model.{k}': v for k, v in sd.items()}}, path)
    model = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True,
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert torch.equal(model.dge[3][0].gate.proj.bias, sd['block4.0.dge.router.gate.bias'])
    assert torch.equal(model.cls_pos_embed, sd['pos_embed4'][:, :1])


@pytest.mark.parametrize('broken', ['missing_gate', 'unknown_dge', 'unexpected', 'splits'])
def test_incomplete_dge_checkpoints_are_errors(tmp_path, capsys, monkeypatch, broken):
    from mmdyn.models.backbones.dge import DGEPVT
    sd = vtpack_pvt_sd(dge=True)
    if broken == 'missing_gate':
        del sd['block2.1.dge.router.gate.bias']
    elif broken == 'unknown_dge':
        sd['block1.0.dge.router.temperature'] = torch.ones(1)
    elif broken == 'unexpected':
        sd['block1.0.attn.extra.weight'] = torch.ones(2)
    else:
        sd['block3.0.dge.splits'] = torch.tensor([2, 1])
    monkeypatch.delenv('MMDYN_DEBUG', raising=False)
    with pytest.raises(SystemExit) as e:  # the converter: one line, nothing written
        _convert_file(tmp_path, sd, 'dge2mmdyn')
    why = dict(missing_gate='does not convert whole', unknown_dge='unexpected vtpack DGE key',
               unexpected='does not convert whole', splits='different dge.splits per layer')
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count('\n') == 0 and why[broken] in err, err
    assert err.startswith(f'dge2mmdyn.py: error: {tmp_path / "src.pth"}: ')
    assert not (tmp_path / 'dst.pth').exists()
    path = str(tmp_path / 'src.pth')
    model = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True,
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError):
        model.init_weights()


def test_checkpoint_gates_of_other_granularities_are_errors(tmp_path):
    """vtpack's ``dge.splits`` say its granularities: a model with others (the same number of
    choices: the gate rows would load one to one) or fewer choices is an error, not gates
    silently choosing other patch sizes or left random; so is an mmdyn-layout checkpoint whose
    gates have another number of choices."""
    from mmdyn.models.backbones.dge import DGEPVT
    sd = vtpack_pvt_sd(dge=True)  # splits [4, 2, 1]: granularities (1, 2, 4), region side 4
    path = str(tmp_path / 'vt.pth')
    torch.save({'model': sd}, path)
    for gran in ((1, 2, 8), (1, 4)):
        model = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True,
                       granularities=gran, init_cfg=dict(type='Pretrained', checkpoint=path))
        with pytest.raises(ValueError, match=r'has granularities \(1, 2, 4\) \(region side '
                           r'4\), the model \(' + ', '.join(map(str, gran))):
            model.init_weights()
    ours = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True)
    ours.init_weights()
    mine = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': ours.state_dict()}, mine)
    model = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True,
                   granularities=(1, 4), init_cfg=dict(type='Pretrained', checkpoint=mine))
    with pytest.raises(ValueError, match='does not convert whole'):
        model.init_weights()
    same = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True,
                  init_cfg=dict(type='Pretrained', checkpoint=mine))
    same.init_weights()  # its own layout and granularities: loads
    assert torch.equal(same.dge[3][0].gate.proj.bias, ours.dge[3][0].gate.proj.bias)


def test_static_checkpoint_still_starts_the_gates_from_init(tmp_path):
    """Dense configs start from a static official PVT classifier: no gate in the file, the
    gates keep their initialisation, classifier-only tensors are dropped with a note."""
    from mmdyn.models.backbones.dge import DGEPVT
    path = str(tmp_path / 'static.pth')
    torch.save({'model': vtpack_pvt_sd(dge=False)}, path)
    model = DGEPVT(arch=dict(PVT_ARCH), pretrain_img_size=IMG,
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()  # no error
    # the gates' initialisation: the finest granularity with probability 0.95
    probs = model.dge[0][0].gate.proj.bias.softmax(0)
    assert probs[0].item() == pytest.approx(0.95, rel=1e-6)


# ----------------------------------------------------------------------------- item 4
def _vtpack_layer_cost(ni, nq, c, heads, hid, sr, deit, k, s=4):
    """vtpack's Block.complexity + DynamicRouter.complexity, written out."""
    nk = ni / sr ** 2
    cost = ni * c * 2  # norm1, norm2
    cost += nq * c * c  # q
    if sr > 1:
        cost += ni * c * c + nk * c  # spatial reduction conv and its norm
    if deit:
        cost += 2 * ni * c * c + 2 * nq * ni * c + 3 * nq * ni * heads
    else:
        cost += 2 * nk * c * c + nq * nk * c + 3 * nq * nk * heads
    cost += nq * c * c  # proj
    cost += nq * c * hid + nq * hid + nq * hid * c  # mlp
    return cost + ni / s ** 2 * c + ni / s ** 2 * c * k  # gate pooling, gate


def _queries(phi_map, extra, s=4):
    """Queries of one layer per image from its granularity map (full S x S regions)."""
    return extra + ((s // phi_map) ** 2).flatten(1).double().sum(1)


def test_budget_conventions_from_the_decisions():
    from mmdyn.models.backbones.dge import DGEPVT
    torch.manual_seed(0)
    kw = dict(arch=dict(PVT_ARCH), pretrain_img_size=IMG, cls_token=True, budget=0.3,
              budget_weight=2.0, drop_path_rate=0.)
    x = torch.randn(2, 3, IMG, IMG)
    betas, all_maps = {}, {}
    for conv in ('authors', 'paper'):
        model = DGEPVT(budget_convention=conv, budget_head_flops=32 * 10, **kw)
        model.init_weights()
        model.train()
        model.set_decision_override(dict(choice=_mixed_choice))
        model(x)
        betas[conv] = model.expected_cost
        maps = all_maps[conv] = model.last_maps
        if conv == 'authors':
            # vtpack: dynamic / static of the whole model, static parts included
            n = 3.0 * IMG  # vtpack's x.shape[1] * x.shape[2]
            const = 32 * 10.0
            c_in = 3
            for s in range(4):
                p, c = (4 if s == 0 else 2), PVT_ARCH['embed_dims'][s]
                const += n * c_in * c + n / p ** 2 * c
                n, c_in = n / p ** 2, c
            dyn, sta = torch.full((2, ), const, dtype=torch.float64), const
            side = IMG // 4
            for s in range(4):
                c, e = PVT_ARCH['embed_dims'][s], (1 if s == 3 else 0)
                ni = side * side + e
                for j in range(PVT_ARCH['depths'][s]):
                    args = (c, PVT_ARCH['num_heads'][s], 2 * c, PVT_ARCH['sr_ratios'][s], False, 3)
                    nq = _queries(maps[f'stage{s}.block{j}'], e)
                    dyn = dyn + _vtpack_layer_cost(ni, nq, *args)
                    sta += _vtpack_layer_cost(ni, float(ni), *args)
                side //= 2
            expected = dyn / sta
        else:
            # Eq. 7 with every layer's per-query cost C_l (q, attention over the layer's keys,
            # proj, MLP; 1 MAC each) and queries psi_l (the class token counted on both sides)
            num, den = torch.zeros(2, dtype=torch.float64), 0.0
            side = IMG // 4
            for s in range(4):
                c, e, sr = PVT_ARCH['embed_dims'][s], (1 if s == 3 else 0), \
                    PVT_ARCH['sr_ratios'][s]
                nk = (side // sr) ** 2 + e
                cq = c * c + 2 * nk * c + c * c + 2 * c * 2 * c
                for j in range(PVT_ARCH['depths'][s]):
                    num = num + cq * _queries(maps[f'stage{s}.block{j}'], e)
                    den += cq * (side * side + e)
                side //= 2
            expected = num / den
        assert torch.allclose(model.expected_cost, expected, rtol=1e-9), \
            (conv, model.expected_cost, expected)
        loss = model.aux_losses['loss_budget']
        assert loss.item() == pytest.approx(2.0 * (expected.mean().item() - 0.3) ** 2, rel=1e-5)
        g = torch.autograd.grad(loss, model.dge[0][0].gate.proj.weight)[0]
        assert g.abs().sum() > 0
    # the same decisions, two different ratios (the static parts make the authors' larger)
    for k, v in all_maps['paper'].items():
        assert torch.equal(all_maps['authors'][k], v)
    assert (betas['authors'] > betas['paper'] + 0.02).all()


def test_paper_convention_is_the_query_ratio_when_every_layer_agrees():
    from mmdyn.models.backbones.dge import DGEPVT
    model = DGEPVT(arch=dict(PVT_ARCH), budget_convention='paper').train()
    x = torch.randn(1, 3, IMG, IMG)
    for phi, ratio in ((4, 1 / 16), (2, 1 / 4), (1, 1.0)):
        model.set_decision_override(dict(choice=('phi', phi)))
        model(x)
        assert model.expected_cost.item() == pytest.approx(ratio, rel=1e-12)


def test_vtpack_static_deit_checkpoint_as_classifier(tmp_path):
    """vtpack's static DeiT (timm layout, fused qkv) through ``vit2mmdyn.py --classifier`` into
    ``deit-s_4xb256_in1k-256px.py``: the reference logits."""
    sd = vtpack_deit_sd(dge=False)
    timm = {}
    for k, v in sd.items():
        if '.attn.q.' in k:
            timm[k.replace('.attn.q.', '.attn.qkv.')] = torch.cat(
                [v, sd[k.replace('.attn.q.', '.attn.kv.')]], 0)
        elif '.attn.kv.' not in k:
            timm[k] = v
    conv = _convert_file(tmp_path, timm, 'vit2mmdyn', '--classifier')
    model = _classifier_from_config('deit-s_4xb256_in1k-256px.py', dict(DEIT_ARCH),
                                    img_size=IMG).eval()
    model.load_state_dict(conv, strict=True)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        got = model(x, mode='tensor')
        ref = ref_deit_classifier(sd, x, DEIT_ARCH['num_heads'])
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()
