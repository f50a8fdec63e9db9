"""One dynamic interface for every method: ``block_table()`` (one schema, one behaviour before a
forward), ``last_flops`` on the module's (the input's) device, ``static_flops(img_shape)`` that
reads ``(H, W)`` and refuses any other shape."""
import pytest
import torch
import torch.nn as nn

from mmdyn.models.backbones import (DGEPVT, PVT, DGEViT, DiT, DoViT, MSViT, PVTv2, T2TViT,
                                   ViT)
from mmdyn.models.classifiers import DVTClassifier
from mmdyn.models.utils.dynamic import (BLOCK_TABLE_KEYS, DynamicModuleMixin, full_compute,
                                        image_hw)

TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 2, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])
TINY_DIT = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 1, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])
TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)


def _dge():
    return DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0.), 64


def _dit():
    return DiT(arch=dict(TINY_DIT), drop_path_rate=0.), 64


def _dovit():
    return DoViT(arch=TINY_VIT, num_classes=5, decision_layers=(1, ), img_size=64,
                 aux_head='conv1x1'), 64


def _msvit():
    return MSViT(arch=TINY_VIT, img_size=64, gate_cfg=dict(hidden_dims=16)), 64


def _dvt():
    return DVTClassifier(arch=TINY_VIT, exits=(2, 3, 4), patch_size=8, num_classes=5), 32


METHODS = dict(dge=_dge, dit=_dit, dovit=_dovit, msvit=_msvit, dvt=_dvt)


def _run(m, size, seed=0):
    torch.manual_seed(seed)
    m.init_weights()
    m.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        if isinstance(m, DVTClassifier):
            return m.early_exit(x)
        return m(x)


@pytest.mark.parametrize('name', sorted(METHODS))
def test_block_table_before_forward_and_schema(name, one_thread):
    m, size = METHODS[name]()
    with pytest.raises(RuntimeError, match=r'\.block_table: run a forward first'):
        m.block_table()
    _run(m, size)
    rows = m.block_table()
    assert rows
    for r in rows:
        assert tuple(r)[:4] == BLOCK_TABLE_KEYS
        assert type(r['block']) is str
        assert all(type(v) is float for k, v in r.items() if k != 'block')
        assert 0.0 <= r['kept_ratio'] <= 1.0 and r['tokens'] >= 0 and r['flops'] >= 0
    assert len({r['block'] for r in rows}) == len(rows)


def test_dge_block_table_full_is_the_static_host(one_thread):
    """Under full compute each DGE-PVT block runs all its tokens, and the blocks plus the
    patch embeddings are the static PVT's FLOPs (counted by the host's own formulas)."""
    m, size = _dge()
    with full_compute(m):
        _run(m, size)
    rows = m.block_table()
    assert [r['block'] for r in rows] == ['stage0.block0', 'stage1.block0', 'stage1.block1',
                                          'stage2.block0', 'stage3.block0']
    assert [r['tokens'] for r in rows] == [256., 64., 64., 16., 4.]  # 16x16, 8x8, 4x4, 2x2
    assert all(r['kept_ratio'] == 1.0 for r in rows)
    host = PVT.flops_breakdown(m, (size, size))
    embeds = sum(v for k, v in host.items() if k.endswith('patch_embed'))
    assert embeds + sum(r['flops'] for r in rows) == pytest.approx(m.static_flops((size, size)))
    assert sum(r['flops'] for r in rows) + embeds == pytest.approx(m.last_flops.mean().item())


def test_dvt_block_table_follows_the_exits(one_thread):
    m = DVTClassifier(arch=TINY_VIT, exits=(2, 3, 4), patch_size=8, num_classes=5,
                      thresholds=(0.0, 1.0))  # everyone stops at exit 0
    _run(m, 32)
    rows = m.block_table()
    assert [(r['block'], r['tokens'], r['kept_ratio']) for r in rows] == [
        ('exits.0', 5., 1.), ('exits.1', 0., 0.), ('exits.2', 0., 0.)]
    assert rows[0]['flops'] == m.exits[0].flops() == m.last_flops.mean().item()


class _Toy(DynamicModuleMixin, nn.Module):
    def __init__(self, device):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, device=device))


def test_records_go_to_the_module_device():
    m = _Toy('meta')
    m.record_dynamic(torch.ones(2), stats=dict(kept_ratio=torch.ones(2)),
                     maps=dict(a=torch.ones(2, 1, 1)))
    assert m.last_flops.device.type == 'meta' and m.last_flops.dtype == torch.float64
    assert m.last_stats['kept_ratio'].device.type == 'meta'
    assert m.last_maps['a'].device.type == 'meta'


def test_image_hw():
    assert image_hw((64, 96)) == (64, 96) and image_hw(32) == (32, 32)
    assert image_hw(torch.Size([7, 9])) == (7, 9)
    for bad in ((2, 3, 64, 64), (3, 64, 64), (64, ), (0, 4), 'ab'):
        with pytest.raises(ValueError, match='img_shape must be'):
            image_hw(bad)


@pytest.mark.parametrize('build', [
    lambda: ViT(arch=TINY_VIT, img_size=64),
    lambda: PVT(arch=dict(TINY_PVT)),
    lambda: PVTv2(arch=dict(TINY_DIT)),
    *[lambda f=f: f()[0] for f in METHODS.values()],
])
def test_static_flops_refuses_a_batch_shape(build):
    m = build()
    with pytest.raises(ValueError, match=r'img_shape must be \(H, W\)'):
        m.static_flops((2, 3, 64, 64))
    assert m.static_flops(64) == m.static_flops((64, 64))


def test_static_flops_honours_the_shape():
    """A ViT on 64x96 runs (64/16)(96/16) + 1 = 25 tokens; PVT's first stage 16x24 tokens."""
    vit = ViT(arch=TINY_VIT, img_size=64)
    expect = vit.patch_embed.flops((64, 96)) + sum(blk.flops(25) for blk in vit.blocks)
    assert vit.static_flops((64, 96)) == expect != vit.static_flops((64, 64))
    pvt = PVT(arch=dict(TINY_PVT))
    bd = pvt.flops_breakdown((64, 96))
    assert bd['stages.0.blocks.0'] == pvt.stages[0].blocks[0].flops(16 * 24, (16, 24))
    t2t = T2TViT(arch='t2t-vit-7')
    assert t2t.static_flops((224, 224)) == t2t.static_flops()
    with pytest.raises(ValueError, match='224x224 images only'):
        t2t.static_flops((64, 64))


def _grid(size, stride):
    return {-(-size // stride), size // stride}


@pytest.mark.parametrize('build', [
    *[lambda f=f: f()[0] for f in METHODS.values()],
    lambda: DGEViT(arch=TINY_VIT, img_size=64, patch_size=8, granularities=(1, 2),
                   region_size=2),
    lambda: DGEPVT(arch=dict(TINY_PVT), drop_path_rate=0., layer_wise=True),
])
def test_decision_map_style_is_where_the_cells_sit(build, one_thread):
    """Every recorded decision map's declared stride is its grid on an input no stride
    divides (cell ``j`` of stride ``s`` covers pixels ``[j s, (j + 1) s)``: an ``h x w`` map
    is the ceil or floor grid of the input; a map of one cell per image has no stride); a map
    declared 0/1 holds only 0 and 1."""
    m = build()
    m.init_weights()
    m.eval()
    shape = (70, 90) if not isinstance(m, DVTClassifier) else (40, 52)
    with torch.no_grad():
        (m.early_exit if isinstance(m, DVTClassifier) else m)(torch.randn(2, 3, *shape))
    assert m.last_maps
    for key, v in m.last_maps.items():
        stride, binary = m.decision_map_style(key)
        assert binary in (True, False), key
        h, w = v.shape[1:]
        if stride is None:
            assert (h, w) == (1, 1), key
        else:
            assert h in _grid(shape[0], stride) and w in _grid(shape[1], stride), (key, stride)
        if binary:
            assert set(v.unique().tolist()) <= {0, 1}, key
