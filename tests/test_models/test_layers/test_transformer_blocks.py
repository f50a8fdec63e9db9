"""Shared transformer blocks: attention (SDPA vs explicit, spatial reduction, query subsets,
key padding), FFNs, patch embeddings and their analytic FLOPs vs FlopCounterMode."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmdyn.models.layers import (MLP, MixFFN, PatchEmbed, PVTBlock, SRAttention, ViTBlock,
                                 explicit_attention, nchw_to_nlc, nlc_to_nchw, overlap_patch_embed,
                                 resize_pos_embed)


def randomize(module, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    module.eval()
    return module


def macs(module, *args, **kwargs):
    with FlopCounterMode(display=False) as fc, torch.no_grad(), explicit_attention(module):
        module(*args, **kwargs)
    return fc.get_total_flops() // 2


ATTN_CASES = [dict(sr_ratio=1), dict(sr_ratio=2), dict(sr_ratio=4), dict(linear=True)]


@pytest.mark.parametrize('cfg', ATTN_CASES)
def test_attention_sdpa_equals_explicit_and_logits(cfg):
    torch.manual_seed(0)
    attn = randomize(SRAttention(16, 2, pool_size=3, **cfg))
    x = torch.randn(2, 8 * 12, 16)
    hw = (8, 12)
    out = attn(x, hw)
    assert out.shape == (2, 96, 16)
    attn.use_sdpa = False
    ref = attn(x, hw)
    attn.use_sdpa = True
    assert torch.allclose(out, ref, atol=1e-5)
    out2, logits = attn(x, hw, return_logits=True)
    assert torch.allclose(out2, ref, atol=1e-5)
    assert logits.shape == (2, 2, 96, attn.num_keys(hw))
    expected_keys = {1: 96, 2: 24, 4: 6}.get(cfg.get('sr_ratio'), 9)
    assert attn.num_keys(hw) == expected_keys
    # an additive bias that is zero changes nothing; a bias is used in both paths alike
    bias = torch.randn(2, 2, 96, attn.num_keys(hw))
    b1 = attn(x, hw, attn_bias=bias)
    attn.use_sdpa = False
    b2 = attn(x, hw, attn_bias=bias)
    attn.use_sdpa = True
    assert torch.allclose(b1, b2, atol=1e-5)
    assert (b1 - out).abs().max() > 1e-3


@pytest.mark.parametrize('cfg', ATTN_CASES)
def test_attention_query_subset_equals_rows_of_full(cfg):
    torch.manual_seed(1)
    attn = randomize(SRAttention(16, 4, pool_size=3, **cfg))
    x = torch.randn(2, 64, 16)
    full = attn(x, (8, 8))
    idx = torch.tensor([[0, 5, 63, 17, 30], [2, 3, 4, 60, 61]])
    q = x.gather(1, idx[..., None].expand(-1, -1, 16))
    sub = attn(x, (8, 8), query=q)
    assert sub.shape == (2, 5, 16)
    assert torch.allclose(sub, full.gather(1, idx[..., None].expand(-1, -1, 16)), atol=1e-5)


def test_attention_key_padding_mask_ignores_padding():
    torch.manual_seed(2)
    attn = randomize(SRAttention(8, 2))
    a, b = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
    padded = torch.cat([torch.cat([b, torch.randn(1, 2, 8)], 1), a], 0)  # [2, 5, 8]
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    out = attn(padded, key_padding_mask=mask)
    assert torch.allclose(out[0, :3], attn(b)[0], atol=1e-5)
    assert torch.allclose(out[1], attn(a)[0], atol=1e-5)
    attn.use_sdpa = False
    assert torch.allclose(attn(padded, key_padding_mask=mask)[0, :3], out[0, :3], atol=1e-5)
    with pytest.raises(ValueError, match='key_padding_mask'):
        attn(padded, key_padding_mask=mask[:, :4])


@pytest.mark.parametrize('use_sdpa', [True, False])
@pytest.mark.parametrize('cfg', [dict(sr_ratio=1), dict(sr_ratio=2)])
def test_attention_fully_masked_row_gives_zeros(cfg, use_sdpa):
    attn = randomize(SRAttention(8, 2, **cfg))
    attn.use_sdpa = use_sdpa
    x = torch.randn(2, 16, 8, requires_grad=True)
    nk = attn.num_keys((4, 4))
    mask = torch.zeros(2, nk, dtype=torch.bool)
    mask[0] = True  # image 0: every key is padding
    mask[1, :nk // 2] = True
    out = attn(x, (4, 4), key_padding_mask=mask)
    assert torch.isfinite(out).all()
    # no key: a zero attention, i.e. the output projection of zeros (its bias)
    torch.testing.assert_close(out[0], attn.proj.bias.expand(16, -1), atol=0, rtol=0)
    ref = attn(x[1:], (4, 4), key_padding_mask=mask[1:])
    torch.testing.assert_close(out[1:], ref, atol=1e-6, rtol=0)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].abs().sum() > 0


def test_block_forward_masked_gradient_is_eq10():
    """``forward_masked``: A_ij = m_j e_ij / sum_p m_p e_ip, with the key weights' gradient
    computed by hand (a masked key stands at its row's largest active logit)."""
    blk = randomize(ViTBlock(8, 2, mlp_ratio=2.))
    x = torch.randn(2, 5, 8)
    m = torch.tensor([[1., 0., 1., 1., 0.], [0., 1., 1., 0., 1.]], requires_grad=True)
    g = torch.randn(2, 5, 8)
    (blk.forward_masked(x, m) * g).sum().backward()

    a = blk.attn
    m2 = m.detach().clone().requires_grad_(True)
    xn = blk.norm1(x)
    q = a.q(xn).view(2, 5, 2, 4).transpose(1, 2)
    k, v = (t.reshape(2, 5, 2, 4).transpose(1, 2) for t in a.kv(xn).chunk(2, -1))
    logits = (q @ k.transpose(-2, -1)) * a.scale
    active = m.detach().bool()[:, None, None, :]
    top = logits.masked_fill(~active, -1e9).amax(-1, keepdim=True)
    e = torch.where(active, logits, top).exp() * m2[:, None, None, :]
    att = (e / e.sum(-1, keepdim=True)) @ v
    y = x + a.proj(att.transpose(1, 2).reshape(2, 5, 8))
    want = y + blk.ffn(blk.norm2(y))
    (want * g).sum().backward()
    torch.testing.assert_close(blk.forward_masked(x, m), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.grad, m2.grad, atol=1e-5, rtol=1e-4)
    assert (m.grad[m == 0].abs() > 0).all()  # masked keys reach the gradient too
    # an image with no unmasked key: finite, a zero attention (the projection bias only)
    none = torch.zeros(1, 5, requires_grad=True)
    out = blk.forward_masked(x[:1], none)
    y = x[:1] + a.proj.bias
    torch.testing.assert_close(out, y + blk.ffn(blk.norm2(y)), atol=1e-6, rtol=0)
    out.sum().backward()
    assert torch.isfinite(none.grad).all()


def test_attention_bad_input():
    with pytest.raises(ValueError, match='divisible'):
        SRAttention(10, 3)
    attn = SRAttention(8, 2, sr_ratio=2)
    with pytest.raises(ValueError, match='hw_shape'):
        attn(torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match=r'\[B, N, 8\]'):
        attn(torch.randn(1, 16, 6), (4, 4))
    with pytest.raises(ValueError, match='4x5'):
        attn(torch.randn(1, 16, 8), (4, 5))


@pytest.mark.parametrize('b', [1, 3])
def test_nlc_to_nchw_is_a_channels_last_view(b):
    h, w, c = 3, 5, 4
    x = torch.randn(b, h * w, c)
    m = nlc_to_nchw(x, (h, w))
    assert m.shape == (b, c, h, w)
    for i, j in [(0, 0), (1, 4), (2, 3)]:  # token i * w + j is the map's pixel (i, j)
        torch.testing.assert_close(m[:, :, i, j], x[:, i * w + j], rtol=0, atol=0)
    # the tokens' memory, channels-last, one image included: batch stride H*W*C (a batch
    # stride of C made oneDNN convolve one image about twice as slowly)
    assert m.data_ptr() == x.data_ptr()
    assert m.stride() == (h * w * c, 1, w * c, c)
    torch.testing.assert_close(nchw_to_nlc(m), x, rtol=0, atol=0)
    # a slice of the tokens (the spatial ones after a class token) is still a view
    xe = torch.randn(b, 1 + h * w, c)
    me = nlc_to_nchw(xe[:, 1:], (h, w))
    assert me.data_ptr() == xe[:, 1:].data_ptr()
    torch.testing.assert_close(me, nlc_to_nchw(xe[:, 1:].contiguous(), (h, w)), rtol=0, atol=0)
    with pytest.raises(ValueError, match='3x4'):
        nlc_to_nchw(x, (3, 4))


def test_mixffn_subset_uses_zero_filled_map():
    torch.manual_seed(3)
    ffn = randomize(MixFFN(8, 16))
    hw = (4, 5)
    x = torch.randn(2, 20, 8)
    full = ffn(x, hw)
    # a permutation of all tokens gives the permuted full result
    perm = torch.stack([torch.randperm(20), torch.randperm(20)])
    xp = x.gather(1, perm[..., None].expand(-1, -1, 8))
    outp = ffn(xp, hw, index=perm)
    assert torch.allclose(outp, full.gather(1, perm[..., None].expand(-1, -1, 8)), atol=1e-5)
    # a padded subset: the depth-wise conv sees zeros where no token was computed
    idx = torch.tensor([[0, 6, 7, -1], [19, 3, 2, 1]])
    keep = torch.zeros(2, 20, 1)
    keep.scatter_(1, idx.clamp(min=0)[..., None], 1.0)
    keep[0, 0] = 1.0
    h = ffn.fc1(x) * keep
    m = ffn.dwconv(h.transpose(1, 2).reshape(2, 16, 4, 5)).flatten(2).transpose(1, 2)
    ref = ffn.fc2(ffn.act(m))
    xs = x.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, 8))
    out = ffn(xs, hw, index=idx)
    sel = ref.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, 8))
    assert torch.allclose(out[0, :3], sel[0, :3], atol=1e-5)
    assert torch.allclose(out[1], sel[1], atol=1e-5)
    with pytest.raises(ValueError, match='index'):
        ffn(xs, hw)


@pytest.mark.parametrize('cls,cfg', [
    (PVTBlock, dict(sr_ratio=2, use_conv_ffn=True)),
    (PVTBlock, dict(sr_ratio=4, use_conv_ffn=False)),
    (PVTBlock, dict(linear=True)),
    (ViTBlock, dict()),
])
def test_block_subset_and_padding(cls, cfg):
    torch.manual_seed(4)
    blk = randomize(cls(16, 2, mlp_ratio=2, **cfg), std=0.2)
    hw = (8, 8)
    x = torch.randn(2, 64, 16)
    full = blk(x, hw)
    assert full.shape == x.shape
    idx = torch.stack([torch.arange(64), torch.arange(64).flip(0)])
    q = x.gather(1, idx[..., None].expand(-1, -1, 16))
    sub = blk(x, hw, query=q, query_index=idx)
    assert torch.allclose(sub, full.gather(1, idx[..., None].expand(-1, -1, 16)), atol=1e-5)
    if cls is ViTBlock:
        # variable-length batches: padding keys are ignored
        y = torch.cat([x[:1, :40], torch.zeros(1, 24, 16)], 1)
        mask = torch.zeros(1, 64, dtype=torch.bool)
        mask[:, 40:] = True
        out = blk(y, query=y[:, :40], key_padding_mask=mask)
        assert torch.allclose(out, blk(x[:1, :40]), atol=1e-5)


@pytest.mark.parametrize('cls,cfg,hw', [
    (PVTBlock, dict(sr_ratio=2, use_conv_ffn=True), (8, 6)),
    (PVTBlock, dict(sr_ratio=4, use_conv_ffn=False), (9, 7)),
    (PVTBlock, dict(linear=True), (8, 8)),
    (ViTBlock, dict(), (5, 5)),
])
def test_block_flops_match_flop_counter(cls, cfg, hw):
    blk = randomize(cls(16, 2, mlp_ratio=3, **cfg))
    n = hw[0] * hw[1]
    x = torch.randn(1, n, 16)
    assert macs(blk, x, hw) == blk.flops(n, hw)
    # query subset: the attention and FFN run on Nq tokens, keys from the full map
    nq = 7
    q = x[:, :nq]
    idx = torch.arange(nq)[None]
    counted = macs(blk, x, hw, query=q, query_index=idx)
    dw = n if isinstance(blk.ffn, MixFFN) else None  # the sparse MixFFN convolves the map
    expected = blk.flops(nq, hw, num_dw_tokens=dw)
    if cls is ViTBlock:
        expected = blk.flops(nq, num_keys=n)
    assert counted == expected
    # tensors of per-image counts give per-image figures
    per_img = blk.flops(torch.tensor([nq, n]), hw)
    assert per_img[1].item() == blk.flops(n, hw)


def test_mlp_flops():
    mlp = MLP(8, 20)
    assert macs(mlp, torch.randn(3, 11, 8)) == 3 * mlp.flops(11)


def test_patch_embeds_shapes_and_flops():
    pe = PatchEmbed(3, 8, kernel_size=4, stride=4, padding=0, norm_cfg=dict(type='LN'))
    x = torch.randn(1, 3, 30, 21)
    tok, hw = pe(x)
    assert hw == pe.out_shape((30, 21)) == (7, 5) and tok.shape == (1, 35, 8)
    assert macs(pe, x) == pe.flops((30, 21)) == 35 * 16 * 3 * 8
    vit_pe = PatchEmbed(3, 8, kernel_size=16, stride=16)  # mmcv 'corner' adaptive padding
    tok, hw = vit_pe(torch.randn(1, 3, 40, 33))
    assert hw == vit_pe.out_shape((40, 33)) == (3, 3)
    ov = overlap_patch_embed(3, 8, 7, 4)
    x = torch.randn(1, 3, 37, 50)
    tok, hw = ov(x)
    assert hw == ov.out_shape((37, 50)) == (10, 13)
    assert macs(ov, x) == ov.flops((37, 50)) == 130 * 49 * 3 * 8
    ov2 = overlap_patch_embed(8, 16, 3, 2)
    assert ov2.out_shape((10, 13)) == (5, 7)
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        ov(torch.randn(1, 4, 16, 16))


def test_resize_pos_embed():
    pos = torch.randn(1, 1 + 12, 4)
    out = resize_pos_embed(pos, (3, 4), (6, 8), 'bicubic', num_extra_tokens=1)
    assert out.shape == (1, 49, 4)
    assert torch.equal(out[:, :1], pos[:, :1])
    same = resize_pos_embed(pos, (3, 4), (3, 4), 'bicubic', 1)
    assert torch.equal(same, pos)
    # bilinear upsampling of a constant map stays constant
    const = torch.ones(1, 9, 2)
    assert torch.allclose(resize_pos_embed(const, (3, 3), (5, 7), 'bilinear'), torch.ones(1, 35, 2))
    with pytest.raises(ValueError, match='grid'):
        resize_pos_embed(pos, (4, 4), (2, 2))
