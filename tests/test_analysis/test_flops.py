"""mmdyn.analysis.flops: formulas by hand, against torch's FlopCounterMode, and the published
figures of the full-size backbones at 224x224 (one FLOP = one multiply-add)."""
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from mmdyn.analysis import flops as fl


def counted_macs(fn, *args):
    """MACs of ``fn(*args)`` seen by FlopCounterMode (which counts 2 per multiply-add)."""
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            fn(*args)
    total = fc.get_total_flops()
    assert total % 2 == 0
    return total // 2


def test_formulas_by_hand():
    assert fl.linear_flops(196, 384, 1152) == 196 * 384 * 1152
    assert fl.conv2d_out_shape((224, 224), 7, 4, 3) == (56, 56)
    assert fl.conv2d_out_shape((57, 61), 3, 2, 1) == (29, 31)
    assert fl.conv2d_out_shape((58, 58), 4, 4, 0) == (14, 14)
    assert fl.conv2d_flops((56, 56), 3, 64, 7) == 56 * 56 * 49 * 3 * 64
    assert fl.conv2d_flops((10, 10), 8, 8, 3, groups=8) == 10 * 10 * 9 * 8
    assert fl.dwconv_flops(100, 8) == 100 * 8 * 9
    assert fl.patch_embed_flops((224, 224), 3, 384, 16, 16) == 196 * 768 * 384
    assert fl.attention_matmul_flops(197, 197, 384) == 2 * 197 * 197 * 384
    # q (Nq C^2) + kv (2 Nk C^2) + q@k^T and attn@v (2 Nq Nk C) + proj (Nq C^2)
    assert fl.attention_flops(10, 4, 8) == 10 * 64 + 2 * 4 * 64 + 2 * 10 * 4 * 8 + 10 * 64
    assert fl.sr_out_shape((56, 56), 8) == (7, 7)
    assert fl.sr_out_shape((15, 9), 4) == (3, 2)
    assert fl.sr_out_shape((56, 40), 8, linear=True) == (7, 7)
    assert fl.sr_num_keys((14, 14), 1) == 196
    assert fl.sr_flops((56, 56), 64, 8) == 49 * 64 * 64 * 64
    assert fl.sr_flops((56, 56), 64, 8, linear=True) == 49 * 64 * 64
    assert fl.sr_flops((7, 7), 64, 1) == 0
    assert fl.mlp_flops(49, 512, 2048) == 2 * 49 * 512 * 2048
    assert fl.mixffn_flops(49, 512, 2048) == 2 * 49 * 512 * 2048 + 49 * 2048 * 9
    assert fl.mixffn_flops(5, 4, 8, num_dw_tokens=20) == 2 * 5 * 4 * 8 + 20 * 8 * 9
    assert fl.mlp_flops(2.5, 4, 8) == 160.0 and isinstance(fl.mlp_flops(2.0, 4, 8), int)
    with pytest.raises(ValueError, match='groups'):
        fl.conv2d_flops((4, 4), 6, 8, 3, groups=4)


def test_tensor_counts_are_per_image_float64():
    nq = torch.tensor([10, 0, 196])
    got = fl.attention_flops(nq, 49, 64)
    assert got.dtype == torch.float64 and got.shape == (3,)
    for i, n in enumerate(nq.tolist()):
        assert got[i].item() == fl.attention_flops(n, 49, 64)
    # differentiable expected counts
    p = torch.tensor([0.25, 0.5], requires_grad=True)
    cost = fl.mlp_flops(p * 100, 8, 32)
    cost.sum().backward()
    assert torch.allclose(p.grad, torch.full((2,), 2 * 100 * 8 * 32, dtype=torch.float32))


def test_primitives_match_flop_counter():
    lin = nn.Linear(24, 40)
    assert counted_macs(lin, torch.randn(2, 7, 24)) == 2 * fl.linear_flops(7, 24, 40)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(1, 6, 17, 12)
    out_hw = fl.conv2d_out_shape((17, 12), 3, 2, 1)
    assert conv(x).shape[-2:] == out_hw
    assert counted_macs(conv, x) == fl.conv2d_flops(out_hw, 6, 10, 3)
    dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
    assert counted_macs(dw, torch.randn(1, 12, 5, 6)) == fl.dwconv_flops(30, 12)
    q, k = torch.randn(1, 2, 9, 4), torch.randn(1, 2, 5, 4)
    assert counted_macs(lambda a, b: (a @ b.transpose(-2, -1)).softmax(-1) @ b, q, k) == \
        fl.attention_matmul_flops(9, 5, 8)


# Published figures (classification models at 224x224; one FLOP = one multiply-add):
# * PVT v1 paper (Wang et al., ICCV 2021, "Pyramid Vision Transformer", Table 2 ImageNet):
#   PVT-Tiny 1.9 G, PVT-Small 3.8 G, PVT-Medium 6.7 G, PVT-Large 9.8 G.
# * PVTv2 paper (Wang et al., CVMJ 2022, "PVT v2: Improved Baselines", Table 2 ImageNet):
#   B0 0.6 G, B1 2.1 G, B2 4.0 G, B2-Li 3.9 G, B3 6.9 G, B4 10.1 G, B5 11.8 G.
# * DeiT paper (Touvron et al., ICML 2021, Table 1): DeiT-Ti 1.3 G, DeiT-S 4.6 G, DeiT-B 17.6 G;
#   ViT-S/16 (same architecture; timm / AugReg tables): 4.6 G.
# The classification head (C x 1000) is added to the backbone count. Published values are
# rounded to 0.1 G, so the tolerance is 2 % or half a rounding step, whichever is larger.
PUBLISHED = [
    ('PVT', 'tiny', 512, 1.9), ('PVT', 'small', 512, 3.8), ('PVT', 'medium', 512, 6.7),
    ('PVT', 'large', 512, 9.8),
    ('PVTv2', 'b0', 256, 0.6), ('PVTv2', 'b1', 512, 2.1), ('PVTv2', 'b2', 512, 4.0),
    ('PVTv2', 'b2-li', 512, 3.9), ('PVTv2', 'b3', 512, 6.9), ('PVTv2', 'b4', 512, 10.1),
    ('PVTv2', 'b5', 512, 11.8),
    ('ViT', 'deit-t', 192, 1.3), ('ViT', 'deit-s', 384, 4.6), ('ViT', 'vit-s', 384, 4.6),
    ('ViT', 'deit-b', 768, 17.6),
]


def _static_gmacs(name, arch, head_in):
    from mmdyn.models.backbones import PVT, PVTv2, ViT
    cls = dict(PVT=PVT, PVTv2=PVTv2, ViT=ViT)[name]
    # the counts need the module structure only: build on the meta device (no memory, no init)
    with torch.device('meta'):
        model = cls(arch=arch)
    return (model.static_flops((224, 224)) + head_in * 1000) / 1e9


@pytest.mark.parametrize('name,arch,head_in,published', PUBLISHED)
def test_published_figures(name, arch, head_in, published):
    got = _static_gmacs(name, arch, head_in)
    assert abs(got - published) <= max(0.02 * published, 0.05), (name, arch, got, published)


def test_exact_reference_values():
    # hand-derived totals (see the module docstring of mmdyn.analysis.flops)
    # ViT-S/16: 12 blocks of 12 N C^2 + 2 N^2 C with N = 197, C = 384, patch embed 196*768*384
    n, c = 197, 384
    vit_s = 12 * (12 * n * c * c + 2 * n * n * c) + 196 * 768 * c
    got = _static_gmacs('ViT', 'vit-s', 0) * 1e9
    assert round(got) == vit_s
    assert abs((vit_s + 384 * 1000) / 1e9 - 4.60) < 0.005  # 4.60 GMACs


def test_reuse_formulas_by_hand_and_counted():
    """DVT's reuse costs: an FFN whose fc1 reads extra channels, the separable grid resize and
    the 2-D aware relation up-sampling; by hand and as counted on the real operators."""
    from mmdyn.models.classifiers.dvt import resize_grid, upsample_relation
    from mmdyn.models.layers.ffn import MLP
    # fc1: (384 + 48) -> 1536, fc2: 1536 -> 384, on 101 tokens
    assert fl.mlp_flops(101, 384, 1536, in_dims=432) == 101 * (432 * 1536 + 1536 * 384)
    assert fl.mlp_flops(101, 384, 1536, in_dims=384) == fl.mlp_flops(101, 384, 1536)
    # feature-reuse MLP 384 -> 128 -> 48 on 49 tokens
    assert fl.mlp_flops(49, 48, 128, in_dims=384) == 49 * (384 * 128 + 128 * 48)
    # rows [10, 7] @ [7, 7] then columns [10, 7] @ [7, 10], 48 maps
    assert fl.grid_resize_flops((7, 7), (10, 10), 48) == 48 * (10 * 7 * 7 + 10 * 10 * 7)
    assert fl.grid_resize_flops((10, 10), (10, 10), 48) == 0
    # 72 maps: the 1 + 49 old query rows resized, then the 1 + 100 new key columns
    assert fl.relation_upsample_flops(72, (7, 7), (10, 10)) == 72 * (50 + 101) * 1190
    mlp = MLP(8, 12, in_dims=11)
    assert mlp.fc1.in_features == 11 and mlp.fc2.out_features == 8
    assert counted_macs(mlp, torch.randn(1, 5, 11)) == mlp.flops(5) == \
        fl.mlp_flops(5, 8, 12, in_dims=11)
    assert counted_macs(resize_grid, torch.randn(1, 6, 3, 4), (5, 7)) == \
        fl.grid_resize_flops((3, 4), (5, 7), 6)
    rel = torch.randn(1, 6, 1 + 3 * 3, 1 + 3 * 3)
    assert counted_macs(upsample_relation, rel, (3, 3), (5, 5)) == \
        fl.relation_upsample_flops(6, (3, 3), (5, 5))
    # an axis whose resize is a copy (n -> 2n) runs as an index: no MACs counted or run
    assert fl.resize_is_copy(7, 14) and fl.resize_is_copy(7, 7) and not fl.resize_is_copy(7, 10)
    assert fl.grid_resize_flops((7, 3), (14, 5), 6) == 6 * 14 * 5 * 3   # rows copied
    assert counted_macs(resize_grid, torch.randn(1, 6, 7, 3), (14, 5)) == \
        fl.grid_resize_flops((7, 3), (14, 5), 6)
    assert fl.relation_upsample_flops(72, (7, 7), (14, 14)) == 0
    rel = torch.randn(1, 6, 1 + 3 * 3, 1 + 3 * 3)
    assert counted_macs(upsample_relation, rel, (3, 3), (6, 6)) == 0


def test_count_polynomial_equals_the_block_formulas():
    """The polynomial of a block's FLOPs in its token count gives the formula's values exactly,
    for ints, floats and per-image tensors, and sums over blocks."""
    from mmdyn.models.layers import PVTBlock, ViTBlock
    vit = ViTBlock(64, 4, mlp_ratio=4.)
    poly = fl.CountPolynomial.fit(vit.flops)
    assert poly.c == 2 * 64  # attention products: 2 n^2 C
    for n in (0, 1, 7, 197, 1025):
        assert poly(n) == vit.flops(n) and isinstance(poly(n), int)
    counts = torch.tensor([1., 50., 197., 33.5])
    ref = vit.flops(counts)
    assert torch.equal(poly(counts), ref) and poly(counts).dtype == torch.float64
    assert poly(33.5) == vit.flops(33.5)
    # PVTv2 block with reduced keys: linear in the queries
    pvt = PVTBlock(32, 2, sr_ratio=2)
    lin = fl.CountPolynomial.fit(lambda n: pvt.flops(n, (14, 14)))
    assert lin.c == 0 and lin(100) == pvt.flops(100, (14, 14))
    both = sum([poly, poly, fl.CountPolynomial.fit(vit.flops)])
    assert torch.equal(both(counts), 3 * ref)
    # differentiable through a tensor count
    n = torch.tensor([10.], dtype=torch.float64, requires_grad=True)
    poly(n).sum().backward()
    assert n.grad.item() == poly.b + 2 * poly.c * 10


def test_count_polynomial_refuses_a_cubic():
    with pytest.raises(ValueError, match='degree <= 2'):
        fl.CountPolynomial.fit(lambda n: n ** 3)
