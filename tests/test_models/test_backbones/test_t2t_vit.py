"""T2T-ViT's soft split: the windows of ``nn.Unfold`` as contiguous tokens, for image maps
(channels first) and token maps (channels last), values and gradients."""
import pytest
import torch
import torch.nn as nn

from mmdyn.models.backbones.t2t_vit import T2TViT, soft_split


@pytest.mark.parametrize('shape,k,s,p', [
    ((2, 3, 32, 32), 7, 4, 2), ((2, 3, 32, 32), 14, 8, 3), ((1, 3, 30, 26), 11, 6, 5),
    ((3, 5, 9, 7), 3, 2, 1), ((1, 2, 8, 8), 3, 2, 0)])
def test_soft_split_equals_unfold(shape, k, s, p):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    want = nn.Unfold(k, stride=s, padding=p)(x).transpose(1, 2)
    got = soft_split(x, k, s, p)
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.equal(got, want)
    # the same windows from the channels-last map
    x_cl = x.detach().permute(0, 2, 3, 1).contiguous().requires_grad_()
    assert torch.equal(soft_split(x_cl, k, s, p, channels_last=True), want)
    # gradients: overlapping windows add up as unfold's do
    w = torch.randn_like(want)
    (g_want, ) = torch.autograd.grad((want * w).sum(), x)
    (g_got, ) = torch.autograd.grad((got * w).sum(), x)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
    (g_cl, ) = torch.autograd.grad((soft_split(x_cl, k, s, p, channels_last=True) * w).sum(),
                                   x_cl)
    torch.testing.assert_close(g_cl.permute(0, 3, 1, 2), g_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('soft', [(7, 4, 2), (14, 8, 3)])
def test_tokenizer_equals_the_unfold_chain(soft):
    """The tokenizer on soft splits equals the unfold / transpose chain it replaced (token maps
    turned back to channels-first maps between the splits)."""
    torch.manual_seed(0)
    m = T2TViT(arch=dict(embed_dims=32, depth=1, num_heads=2, mlp_ratio=2.), img_size=64,
               soft_split=soft, token_dims=8).eval()
    x = torch.randn(2, 3, 64, 64)
    k, s, p = soft
    g0, g1, _ = m.grids
    with torch.no_grad():
        t = m.token1(nn.Unfold(k, stride=s, padding=p)(x).transpose(1, 2))
        t = t.transpose(1, 2).reshape(2, 8, g0, g0)
        t = m.token2(nn.Unfold(3, stride=2, padding=1)(t).transpose(1, 2))
        t = t.transpose(1, 2).reshape(2, 8, g1, g1)
        t = m.project(nn.Unfold(3, stride=2, padding=1)(t).transpose(1, 2))
        want = torch.cat([m.cls_token.expand(2, -1, -1), t], 1) + m.pos_embed
        got, hw = m.embed(x)
    assert hw == (m.grids[2], m.grids[2])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
