"""The core block's FFN-input extension point (``ffn_extra_dims``, DVT's feature reuse) and its
``return_logits``; the hosts' ``layer_cfgs``."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmdyn.models.backbones import T2TViT, ViT
from mmdyn.models.layers import PVTBlock, ViTBlock, explicit_attention

pytestmark = pytest.mark.usefixtures('one_thread')


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def test_ffn_extra_equals_hand_computation():
    """``x + fc2(gelu(fc1(LN([x, extra]))))`` after the attention residual, written with
    functional ops from the block's own tensors; logits equal the explicit attention's."""
    c, e, heads = 8, 3, 2
    blk = randomize(ViTBlock(c, heads, mlp_ratio=2., ffn_extra_dims=e))
    assert blk.norm2.weight.shape == (c + e, )
    assert blk.ffn.fc1.weight.shape == (2 * c, c + e) and blk.ffn.fc2.weight.shape == (c, 2 * c)
    x, extra = torch.randn(2, 5, c), torch.randn(2, 5, e)
    with torch.no_grad():
        y, logits = blk(x, ffn_extra=extra, return_logits=True)
        n1 = F.layer_norm(x, (c, ), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        q = F.linear(n1, blk.attn.q.weight, blk.attn.q.bias).view(2, 5, heads, -1).transpose(1, 2)
        k, v = F.linear(n1, blk.attn.kv.weight, blk.attn.kv.bias).view(2, 5, 2, heads, -1) \
            .permute(2, 0, 3, 1, 4)
        want_logits = q @ k.transpose(-2, -1) * (c // heads) ** -0.5
        a = (want_logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, c)
        x1 = x + F.linear(a, blk.attn.proj.weight, blk.attn.proj.bias)
        h = F.layer_norm(torch.cat([x1, extra], -1), (c + e, ), blk.norm2.weight, blk.norm2.bias,
                         blk.norm2.eps)
        want = x1 + F.linear(F.gelu(F.linear(h, blk.ffn.fc1.weight, blk.ffn.fc1.bias)),
                             blk.ffn.fc2.weight, blk.ffn.fc2.bias)
        plain = blk(x, ffn_extra=extra)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, y, rtol=1e-5, atol=1e-5)
    # FLOPs: the wider fc1 counted, equal to the ops that run
    with FlopCounterMode(display=False) as fc, torch.no_grad(), explicit_attention(blk):
        blk(x[:1], ffn_extra=extra[:1])
    assert fc.get_total_flops() == 2 * blk.flops(5)
    assert blk.flops(5) - ViTBlock(c, heads, mlp_ratio=2.).flops(5) == 5 * e * 2 * c


def test_ffn_extra_errors():
    blk = ViTBlock(8, 2, ffn_extra_dims=3)
    with pytest.raises(ValueError, match='extra FFN channels'):
        blk(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match='extra FFN channels'):
        ViTBlock(8, 2)(torch.randn(1, 4, 8), ffn_extra=torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match='MixFFN'):
        PVTBlock(8, 2, ffn_extra_dims=3)


@pytest.mark.parametrize('host', ['vit', 't2t'])
def test_host_layer_cfgs(host):
    """``layer_cfgs``: one dict for every block or one per block; the state-dict keys stay the
    host's own."""
    arch = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=1)
    kw = dict(img_size=32, patch_size=8) if host == 'vit' else \
        dict(img_size=64, token_dims=8)
    cls = ViT if host == 'vit' else T2TViT
    plain = cls(arch=arch, **kw)
    wide = cls(arch=arch, layer_cfgs=dict(ffn_extra_dims=4), **kw)
    mixed = cls(arch=arch, layer_cfgs=[dict(), dict(ffn_extra_dims=4)], **kw)
    assert list(plain.state_dict()) == list(wide.state_dict()) == list(mixed.state_dict())
    assert [b.ffn.fc1.in_features for b in wide.blocks] == [20, 20]
    assert [b.norm2.normalized_shape[0] for b in mixed.blocks] == [16, 20]
    with pytest.raises(ValueError, match='layer_cfgs'):
        cls(arch=arch, layer_cfgs=[dict()], **kw)
