"""DVT cascade classifier: exactness against the static host, real early exit, FLOPs, errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample
from torch.utils.flop_counter import FlopCounterMode

import mmdyn  # noqa: F401
from mmdyn.evaluation import ComplexityMetric
from mmdyn.models.backbones import ViT
from mmdyn.models.classifiers.dvt import DVTClassifier, upsample_relation
from mmdyn.models.layers.attention import explicit_attention
from mmdyn.models.utils.dynamic import full_compute
from mmdyn.models.utils.records import attach_dynamic_records
from mmdyn.registry import MODELS

# tiny models: one thread avoids oversubscribing the shared CPUs (much faster here)
pytestmark = pytest.mark.usefixtures('one_thread')
TINY = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
NC = 5


def make(reuse=True, exits=(2, 3, 4), thresholds=None, **kw):
    torch.manual_seed(0)
    m = DVTClassifier(arch=TINY, exits=exits, patch_size=8, num_classes=NC,
                      feature_reuse=reuse, relation_reuse=reuse, thresholds=thresholds, **kw)
    # larger random weights than the default init so that confidences spread out
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.normal_(0, 0.1)
    return m.eval()


def images(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


def static_host_logits(exit_mod, x):
    """The static core ViT at the exit's token count, loaded with the exit's weights."""
    vit = ViT(arch=TINY, img_size=exit_mod.input_size, patch_size=8, out_type='cls_token')
    vit.load_state_dict(exit_mod.backbone.state_dict())
    vit.eval()
    xr = F.interpolate(x, size=(exit_mod.input_size, ) * 2, mode='bilinear',
                       align_corners=False, antialias=True)
    return exit_mod.head.fc(vit(xr)[0])


def test_no_reuse_exits_equal_static_host():
    m = make(reuse=False)
    x = images()
    with torch.no_grad():
        outs = m.run_all(x)
        for e, o in zip(m.exits, outs):
            torch.testing.assert_close(o, static_host_logits(e, x), atol=1e-5, rtol=1e-5)


def test_reuse_changes_downstream_only_and_trains():
    x = images()
    a = make(reuse=True)
    b = make(reuse=False)
    # copy every shared weight of the reuse-free model into the reusing one but the reuse parts:
    # equal shapes as they are; the reusing exits' widened norm2 / fc1 (C + 48 inputs) get the
    # reuse-free C entries / columns, only their 48 reuse entries keep their own values
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sb) <= set(sa)
    reuse_only = [k for k in sa if k not in sb]
    assert reuse_only and all('feature_modules' in k or 'relation_module' in k
                              for k in reuse_only)
    widened = 0
    with torch.no_grad():
        for k, v in sb.items():
            if sa[k].shape == v.shape:
                sa[k].copy_(v)
            else:
                assert k.endswith(('norm2.weight', 'norm2.bias', 'fc1.weight')), k
                sa[k][..., :v.shape[-1]].copy_(v)
                widened += 1
    assert widened == 12  # exits 1 and 2, 2 blocks, norm2 weight / bias and fc1 weight each
    for k, v in sb.items():
        assert torch.equal(a.state_dict()[k][..., :v.shape[-1]], v), k
    with torch.no_grad():
        oa, ob = a.run_all(x), b.run_all(x)
        ref = static_host_logits(a.exits[0], x)
    torch.testing.assert_close(oa[0], ref, atol=1e-5, rtol=1e-5)  # first exit never reuses
    torch.testing.assert_close(oa[0], ob[0], atol=1e-6, rtol=1e-5)  # same upstream
    for o_a, o_b in zip(oa[1:], ob[1:]):  # the downstream exits differ by the reuse only
        assert (o_a - o_b).abs().max() > 1e-2
    # zeroing the reuse modules' outputs (last linears) gives a plain transformer again
    with torch.no_grad():
        for e in a.exits[1:]:
            for fm in e.feature_modules:
                fm.fc2.weight.zero_()
                fm.fc2.bias.zero_()
            e.relation_module.fc2.weight.zero_()
            e.relation_module.fc2.bias.zero_()
    oz = a.run_all(x)
    for e, o in zip(a.exits[1:], oz[1:]):
        # same as a static host whose FFN reads [tokens, 0]: drop the extra fc1 columns and use
        # the norm over C + 48 channels with zeros... checked against a manual block loop
        bb = e.backbone
        xr = e.prepare_input(x)
        t, hw = bb.embed(xr)
        for blk in bb.blocks:
            t = blk.attn_residual(t, hw)
            y = blk.norm2(torch.cat([t, t.new_zeros(*t.shape[:2], 48)], -1))
            t = t + blk.ffn(y)
        torch.testing.assert_close(o, e.head.fc(bb.norm(t)[:, 0]), atol=1e-5, rtol=1e-5)
    # gradients reach the reuse modules and, through them, the upstream transformer
    a2 = make(reuse=True).train()
    ds = [DataSample().set_gt_label(i % NC) for i in range(len(x))]
    losses = a2(x, ds, mode='loss')
    assert set(losses) == {'loss_exit0', 'loss_exit1', 'loss_exit2'}
    outs = a2.run_all(x)
    tgt = torch.tensor([i % NC for i in range(len(x))])
    for k in range(3):
        torch.testing.assert_close(losses[f'loss_exit{k}'], F.cross_entropy(outs[k], tgt))
    a2.zero_grad()
    losses['loss_exit2'].backward()
    e2 = a2.exits[2]
    assert e2.feature_modules[0].fc1.weight.grad.abs().sum() > 0
    assert e2.relation_module.fc1.weight.grad.abs().sum() > 0
    assert a2.exits[1].backbone.blocks[-1].ffn.fc2.weight.grad.abs().sum() > 0
    assert a2.exits[0].backbone.blocks[-1].attn.q.weight.grad.abs().sum() > 0  # via relations
    assert a2.exits[0].head.fc.weight.grad is None or \
        a2.exits[0].head.fc.weight.grad.abs().sum() == 0


def test_upsample_relation_carries_cls_and_is_2d():
    rel = torch.randn(2, 3, 1 + 4, 1 + 4)
    up = upsample_relation(rel, (2, 2), (4, 4))
    assert up.shape == (2, 3, 17, 17)
    assert torch.equal(up[:, :, 0, 0], rel[:, :, 0, 0])
    # 2 -> 4 is a pure nearest x2 on the grid: query (r, c) key (r', c') <- (r//2, c//2) ...
    for q in range(16):
        for k in range(16):
            qs = (q // 4 // 2) * 2 + (q % 4) // 2
            ks = (k // 4 // 2) * 2 + (k % 4) // 2
            assert torch.equal(up[:, :, 1 + q, 1 + k], rel[:, :, 1 + qs, 1 + ks])
        assert torch.equal(up[:, :, 1 + q, 0], rel[:, :, 1 + (q // 4 // 2) * 2 + (q % 4) // 2, 0])


def mixed_thresholds(m, x, margin=1e-5):
    """Thresholds between two neighbouring confidences near the middle of the batch, for
    exits 1..K-1, so that images spread over the exits.

    A threshold equal to one image's own confidence would make its exit depend on float
    round-off (a batch and a single image run different kernels, about 1e-7 apart): the
    threshold sits halfway between two neighbouring confidences, at least ``margin`` from both.
    """
    with torch.no_grad():
        outs = m.run_all(x)
    th = []
    for o in outs[:-1]:
        c = o.softmax(-1).max(-1).values.sort().values.tolist()
        n = len(c)
        # the split nearest the middle of the batch whose neighbours are far enough apart
        cut = next((j for j in sorted(range(1, n), key=lambda j: abs(2 * j - n))
                    if c[j] - c[j - 1] > 2 * margin), None)
        assert cut is not None, f'confidences too close to split the batch: {c}'
        th.append((c[cut - 1] + c[cut]) / 2)
    return th, outs


@pytest.mark.parametrize('reuse', [True, False])
def test_early_exit_matches_full_run_and_flops(reuse):
    m = make(reuse=reuse)
    x = images(8)
    th, outs = mixed_thresholds(m, x)
    m.set_thresholds(th)
    res = m(x, mode='predict')
    ex = torch.tensor([s.exit_index for s in res])
    assert len(set(ex.tolist())) >= 2, ex  # the batch really splits
    cum = m.cumulative_flops()
    conf = [o.softmax(-1).max(-1).values for o in outs]
    for i, s in enumerate(res):
        k = s.exit_index
        # the exit it took is the first whose confidence reaches its threshold
        expect = next((j for j in range(2) if conf[j][i] >= th[j]), 2)
        assert k == expect
        torch.testing.assert_close(s.pred_score, outs[k][i].softmax(-1), atol=1e-5, rtol=1e-5)
        assert int(s.pred_label) == int(outs[k][i].argmax())
        assert float(m.last_flops[i]) == float(cum[k])
    assert torch.equal(m.last_stats['exit_ratio'], (ex < 2).float())
    for k in range(3):
        assert torch.equal(m.last_stats[f'exit{k}_ratio'], (ex == k).float())


def test_alone_equals_batch():
    m = make(reuse=True)
    x = images(6)
    th, _ = mixed_thresholds(m, x)
    m.set_thresholds(th)
    batch = m(x, mode='predict')
    flops_b = m.last_flops.clone()
    for i in range(len(x)):
        alone = m(x[i:i + 1], mode='predict')[0]
        assert alone.exit_index == batch[i].exit_index
        assert int(alone.pred_label) == int(batch[i].pred_label)
        torch.testing.assert_close(alone.pred_score, batch[i].pred_score, atol=1e-5, rtol=1e-5)
        assert float(m.last_flops[0]) == float(flops_b[i])


def test_threshold_extremes_and_full_mode():
    x = images(5)
    m = make(thresholds=[0., 0.])
    res = m(x, mode='predict')
    assert all(s.exit_index == 0 for s in res)
    assert torch.equal(m.last_flops, torch.full((5, ), float(m.exit_flops()[0]),
                                                dtype=torch.float64))
    m.set_thresholds([1., 1.])  # random tiny nets are never fully sure
    outs = m.run_all(x)
    assert max(float(o.softmax(-1).max()) for o in outs[:2]) < 1
    res = m(x, mode='predict')
    assert all(s.exit_index == 2 for s in res)
    assert torch.all(m.last_flops == float(sum(m.exit_flops())))
    m.set_thresholds([0., 0.])
    with full_compute(m):
        res = m(x, mode='predict')
    assert all(s.exit_index == 2 for s in res)
    for i, s in enumerate(res):
        assert s.exit_scores.shape == (3, NC)
        for k in range(3):
            torch.testing.assert_close(s.exit_scores[k], outs[k][i].softmax(-1), atol=1e-5,
                                       rtol=1e-5)
    assert m.static_flops((32, 32)) == sum(m.exit_flops())


@pytest.mark.parametrize('reuse,kw', [(True, {}), (False, {}),
                                      (True, dict(feature_reuse_dims=(16, 8)))])
def test_exit_flops_match_flop_counter(reuse, kw):
    m = make(reuse=reuse, **kw)
    x = images(1)
    if kw:  # narrower feature-reuse MLPs: their widths and each FFN's extra input follow
        for e in m.exits[1:]:
            assert [(f.fc1.out_features, f.fc2.out_features) for f in e.feature_modules] == \
                [(16, 8)] * e.depth
            assert [b.ffn.fc1.in_features for b in e.backbone.blocks] == [32 + 8] * e.depth
    with explicit_attention(m):
        state = None
        for e in m.exits:
            with FlopCounterMode(display=False) as fc:
                with torch.no_grad():
                    _, state = e(x, state)
            # the counter counts 2 FLOPs per multiply-add; ours are MACs. An exit that exports
            # its relations needs the explicit path anyway, which the counter sees.
            assert fc.get_total_flops() == 2 * e.flops(), (e.grid, fc.get_total_flops(),
                                                           e.flops())


def test_deit_s_cascade_flops():
    with torch.device('meta'):
        plain = DVTClassifier(feature_reuse=False, relation_reuse=False)
        full = DVTClassifier()
        two = DVTClassifier(exits=(7, 14))
    head = 384 * 1000
    # each exit without reuse is DeiT-S at 7x7 / 10x10 / 14x14 tokens
    with torch.device('meta'):
        vit = ViT(arch='deit-s')
    for e, side in zip(plain.exits, (112, 160, 224)):
        assert e.flops() == vit.static_flops((side, side)) + head
    f = plain.exit_flops()
    assert abs(f[2] / 1e9 - 4.60) < 0.01 and abs(f[0] / 1e9 - 1.10) < 0.01
    g = full.exit_flops()
    assert g[0] == f[0]
    # reuse overhead: the reuse MLPs, the 48 extra FFN input channels and the grid resizes (two
    # small matrix products per map: H*h*w + H*W*w): 12 x 48 feature maps, and the relation
    # maps of the old query rows then the new key columns (72 channels)
    def rs(p, g):
        return g * p * p + g * g * p

    over1 = 12 * (49 * (384 * 128 + 128 * 48) + 101 * 48 * 1536) + 50 ** 2 * 2 * 72 * 216 \
        + 12 * 48 * rs(7, 10) + 72 * (50 + 101) * rs(7, 10)
    over2 = 12 * (100 * (384 * 128 + 128 * 48) + 197 * 48 * 1536) + 101 ** 2 * 2 * 72 * 216 \
        + 12 * 48 * rs(10, 14) + 72 * (101 + 197) * rs(10, 14)
    assert g[1] - f[1] == over1 and g[2] - f[2] == over2
    # 7x7 -> 14x14 is a copy on both axes (nearest x2): indexes, no MACs
    assert two.exit_flops()[1] - f[2] == \
        12 * (49 * (384 * 128 + 128 * 48) + 197 * 48 * 1536) + 50 ** 2 * 2 * 72 * 216


def test_metric_reports_realised_flops():
    m = make(reuse=True)
    x = images(6)
    th, _ = mixed_thresholds(m, x)
    m.set_thresholds(th)
    attach_dynamic_records(m)
    res = m(x, [DataSample().set_gt_label(0) for _ in range(6)], mode='predict')
    metric = ComplexityMetric()
    metric.process({}, [s.to_dict() for s in res])
    out = metric.compute_metrics(metric.results)
    cum = m.cumulative_flops()
    expect = sum(cum[s.exit_index] for s in res) / 6 / 1e9
    assert out['gflops'] == pytest.approx(expect)
    assert out['static_gflops'] == pytest.approx(sum(m.exit_flops()) / 1e9)
    assert out['exit_ratio'] == pytest.approx(sum(s.exit_index < 2 for s in res) / 6)


def test_registry_and_thresholds_file(tmp_path):
    p = tmp_path / 'th.json'
    p.write_text(json.dumps(dict(thresholds=[0.25, 0.5])))
    m = MODELS.build(dict(type='mmdyn.DVTClassifier', arch=TINY, exits=[2, 3, 4], patch_size=8,
                          num_classes=NC, thresholds_file=str(p)))
    assert m.thresholds == [0.25, 0.5]
    with pytest.warns(UserWarning, match='does not exist'):
        m = DVTClassifier(arch=TINY, exits=[2, 4], patch_size=8, num_classes=NC,
                          thresholds=[0.3], thresholds_file=str(tmp_path / 'none.json'))
    assert m.thresholds == [0.3]


def test_bad_input():
    kw = dict(arch=TINY, patch_size=8, num_classes=NC)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DVTClassifier(exits=(2, 4), thresholds=[1.5], **kw)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DVTClassifier(exits=(2, 3, 4), thresholds=[0.5, -0.1], **kw)
    with pytest.raises(ValueError, match='need 2 thresholds'):
        DVTClassifier(exits=(2, 3, 4), thresholds=[0.5], **kw)
    with pytest.raises(ValueError, match='at least 2 exits'):
        DVTClassifier(exits=(4, ), **kw)
    with pytest.raises(ValueError, match='must grow'):
        DVTClassifier(exits=(3, 3), **kw)
    with pytest.raises(ValueError, match='must grow'):
        DVTClassifier(exits=(4, 2), **kw)
    deeper = dict(TINY, depth=3)
    with pytest.raises(ValueError, match='same depth and heads'):
        DVTClassifier(arch=[TINY, deeper], exits=(2, 4), patch_size=8, num_classes=NC)
    more_heads = dict(TINY, num_heads=4)
    with pytest.raises(ValueError, match='same depth and heads'):
        DVTClassifier(arch=[TINY, more_heads], exits=(2, 4), patch_size=8, num_classes=NC)
    # feature reuse alone works between hosts of different depth
    m = DVTClassifier(arch=[TINY, deeper], exits=(2, 4), patch_size=8, num_classes=NC,
                      relation_reuse=False)
    assert m.exits[1](images(1), m.exits[0](images(1))[1])[0].shape == (1, NC)
    m = make(thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        m.set_thresholds([0.5, 2.0])
    m = DVTClassifier(exits=(2, 4), **kw).eval()
    for bad in (torch.randn(3, 32, 32), torch.randn(1, 1, 3, 32, 32)):  # no / an extra batch dim
        with pytest.raises(ValueError, match=r'DVT expects \[B, C, H, W\] images'):
            m(bad, mode='tensor')


# ---------------------------------------------------------------------------- T2T-ViT host
T2T_TINY = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=1)


def make_t2t(reuse):
    torch.manual_seed(0)
    return DVTClassifier(arch=T2T_TINY, host='t2t', img_size=64,
                         exits=[dict(grid=2, soft_split=(14, 8, 3)),
                                dict(grid=4, soft_split=(7, 4, 2))],
                         num_classes=NC, feature_reuse=reuse, relation_reuse=reuse,
                         backbone_cfg=dict(token_dims=8)).eval()


def test_t2t_exit_equals_static_t2t_and_flops():
    from mmdyn.models.backbones import T2TViT
    m = make_t2t(reuse=False)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        outs = m.run_all(x)
        for e, o in zip(m.exits, outs):
            host = T2TViT(T2T_TINY, img_size=64, soft_split=e.backbone.soft_split, token_dims=8)
            host.load_state_dict(e.backbone.state_dict())
            host.eval()
            xr = F.interpolate(x, size=(64, 64), mode='bilinear', align_corners=False,
                               antialias=True)
            torch.testing.assert_close(o, e.head.fc(host(xr)[0]), atol=1e-5, rtol=1e-5)
    for reuse in (False, True):
        m = make_t2t(reuse)
        state = None
        with explicit_attention(m):
            for e in m.exits:
                with FlopCounterMode(display=False) as fc, torch.no_grad():
                    _, state = e(x[:1], state)
                assert fc.get_total_flops() == 2 * e.flops()


def test_t2t_vit_12_flops_match_paper():
    with torch.device('meta'):
        plain = DVTClassifier(arch='t2t-vit-12', host='t2t', feature_reuse=False,
                              relation_reuse=False)
        both = DVTClassifier(arch='t2t-vit-12', host='t2t')
        f_only = DVTClassifier(arch='t2t-vit-12', host='t2t', relation_reuse=False)
        r_only = DVTClassifier(arch='t2t-vit-12', host='t2t', feature_reuse=False)
    assert [e.backbone.grids[2] for e in plain.exits] == [7, 10, 14]
    # Table 6 (cumulative GFLOPs) of the paper, within 2 %
    paper = {plain: (0.47, 1.37, 3.15), f_only: (0.47, 1.43, 3.31),
             r_only: (0.47, 1.41, 3.34), both: (0.47, 1.46, 3.50)}
    for model, ref in paper.items():
        for got, want in zip(model.cumulative_flops(), ref):
            assert abs(got / 1e9 - want) / want < 0.02, (got, want)
    f = plain.exit_flops()
    assert abs(f[0] / 1e9 - 0.47) < 0.01 and abs(f[2] / 1e9 - 1.78) < 0.025


def test_t2t_bad_soft_split():
    with pytest.raises(ValueError, match='not 3x3'):
        DVTClassifier(arch=T2T_TINY, host='t2t', img_size=64, num_classes=NC,
                      exits=[dict(grid=2, soft_split=(14, 8, 3)),
                             dict(grid=3, soft_split=(7, 4, 2))])
    with pytest.raises(ValueError, match='host must be'):
        DVTClassifier(arch=TINY, host='swin', exits=(2, 4), num_classes=NC)


def test_tensor_mode():
    m = make(reuse=True)
    x = images(6)
    th, outs = mixed_thresholds(m, x)
    m.set_thresholds(th)
    res = m(x, mode='predict')
    # eval: the early-exit logits, each image from the exit it took, with realised FLOPs
    logits = m(x, mode='tensor')
    assert logits.shape == (6, NC)
    for i, s in enumerate(res):
        torch.testing.assert_close(logits[i], outs[s.exit_index][i], atol=1e-5, rtol=1e-5)
        assert float(m.last_flops[i]) == m.cumulative_flops()[s.exit_index]
    # force_full and training: every exit
    with full_compute(m):
        full = m(x, mode='tensor')
    assert isinstance(full, tuple) and len(full) == 3
    assert torch.all(m.last_flops == float(sum(m.exit_flops())))
    m.train()
    assert len(m(x, mode='tensor')) == 3


def test_public_deit_tokenizers():
    """Exits may change the tokenizer instead of resizing (the public code's DeiT exits)."""
    ex = [dict(grid=2, patch_size=16, input_size=32), dict(grid=3, patch_size=10, patch_pad=1,
                                                             input_size=32),
          dict(grid=4, patch_size=8)]
    torch.manual_seed(0)
    m = DVTClassifier(arch=TINY, exits=ex, num_classes=NC, feature_reuse=False,
                      relation_reuse=False).eval()
    x = images(2)
    outs = m.run_all(x)
    for e, o, p, pad in zip(m.exits, outs, (16, 10, 8), ('corner', 1, 'corner')):
        assert e.input_size == 32  # no resize for a 32 px input
        vit = ViT(arch=TINY, img_size=32, patch_size=p, patch_pad=pad, out_type='cls_token')
        vit.load_state_dict(e.backbone.state_dict())
        vit.eval()
        with torch.no_grad():
            torch.testing.assert_close(o, e.head.fc(vit(x)[0]), atol=1e-5, rtol=1e-5)
        assert e.flops() == vit.static_flops((32, 32)) + TINY['embed_dims'] * NC
    with pytest.raises(ValueError, match='not 2x2'):
        DVTClassifier(arch=TINY, exits=[dict(grid=2, patch_size=8, input_size=32), 4],
                      patch_size=8, num_classes=NC)
    # DeiT-S with the public tokenizers: patch 32 for 7x7, 23 (padding 3) for 10x10 at 224
    with torch.device('meta'):
        pub = DVTClassifier(exits=[dict(grid=7, patch_size=32, input_size=224),
                                   dict(grid=10, patch_size=23, patch_pad=3, input_size=224),
                                   14], feature_reuse=False, relation_reuse=False)
        vit = ViT(arch='deit-s')
    f = pub.exit_flops()
    assert f[0] - 384 * 1000 == 49 * 3 * 32 * 32 * 384 + sum(
        b.flops(50) for b in vit.blocks)
    assert f[1] - 384 * 1000 == 100 * 3 * 23 * 23 * 384 + sum(
        b.flops(101) for b in vit.blocks)


def test_load_public_checkpoint(tmp_path, public_dvt_layout):
    src = make(reuse=True)
    path = tmp_path / 'dvt_official.pth'
    torch.save(dict(model_state_dict=public_dvt_layout(src), flops=[1., 2., 3.]), path)
    torch.manual_seed(123)
    dst = DVTClassifier(arch=TINY, exits=(2, 3, 4), patch_size=8, num_classes=NC,
                        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    dst.init_weights()
    dst.eval()
    x = images(3)
    for a, b in zip(src.run_all(x), dst.run_all(x)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # our own checkpoints load through the same path; mismatched heads are skipped
    own = tmp_path / 'own.pth'
    torch.save(dict(state_dict=src.state_dict()), own)
    ft = DVTClassifier(arch=TINY, exits=(2, 3, 4), patch_size=8, num_classes=NC + 1,
                       init_cfg=dict(type='Pretrained', checkpoint=str(own)))
    ft.init_weights()
    torch.testing.assert_close(ft.exits[2].backbone.blocks[1].attn.q.weight,
                               src.exits[2].backbone.blocks[1].attn.q.weight)
    assert ft.exits[0].head.fc.weight.shape == (NC + 1, TINY['embed_dims'])


def test_t2t_alone_equals_batch_with_reuse():
    """T2T host with both reuses: each image gets the same exit, prediction and FLOPs in a
    batch as alone, and the early-exit logits equal the full run's at the exit taken."""
    m = make_t2t(reuse=True)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.normal_(0, 0.1)
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    th, outs = mixed_thresholds(m, x)
    m.set_thresholds(th)
    with torch.no_grad():
        logits, ex, _ = m.early_exit(x)
    flops_b = m.last_flops.clone()
    assert 0 < int((ex == 0).sum()) < 6
    cum = m.cumulative_flops()
    for i in range(6):
        torch.testing.assert_close(logits[i], outs[int(ex[i])][i], atol=1e-5, rtol=1e-5)
        assert float(flops_b[i]) == float(cum[int(ex[i])])
        with torch.no_grad():
            li, ei, _ = m.early_exit(x[i:i + 1])
        assert int(ei) == int(ex[i])
        torch.testing.assert_close(li[0], logits[i], atol=1e-5, rtol=1e-5)
        assert float(m.last_flops[0]) == float(flops_b[i])


@pytest.mark.parametrize('old,new', [((7, 7), (10, 10)), ((10, 10), (14, 14)),
                                     ((7, 7), (14, 14)), ((3, 5), (7, 4))])
def test_resize_grid_equals_upsample_then_pool(old, new):
    """The separable (matrix) resize equals nearest up-sampling to twice the grid followed by
    adaptive average pooling, the operator it stands for."""
    import torch.nn.functional as F

    from mmdyn.models.classifiers.dvt import resize_grid, resize_matrix
    x = torch.randn(2, 3, *old)
    ref = F.adaptive_avg_pool2d(
        F.interpolate(x, size=(2 * old[0], 2 * old[1]), mode='nearest'), new)
    assert torch.allclose(resize_grid(x, new), ref, atol=1e-6)
    m = resize_matrix(old[0], new[0])
    assert m.shape == (new[0], old[0]) and torch.allclose(m.sum(1), torch.ones(new[0]))
    assert resize_grid(x, old) is x


def test_static_flops_img_shape_and_records_device():
    """Each exit resizes its input, so the cascade's count does not depend on ``img_shape``;
    a T2T host is built for one size and refuses another instead of ignoring it. The records
    of every mode live on the input's device."""
    from mmdyn.models.backbones import T2TViT
    m = make_t2t(reuse=True)
    assert m.static_flops((64, 64)) == m.static_flops((32, 48)) == sum(m.exit_flops())
    with pytest.raises(ValueError, match='img_shape'):
        m.static_flops((0, 64))
    t2t = m.exits[1].backbone
    assert isinstance(t2t, T2TViT)
    assert t2t.static_flops((64, 64)) == t2t.static_flops() > 0
    with pytest.raises(ValueError, match='takes 64x64 images only'):
        t2t.static_flops((32, 32))
    x = torch.randn(2, 3, 64, 64)
    m.train()
    m(x, mode='tensor')
    assert m.last_flops.device == x.device and m.last_flops.tolist() == [m.static_flops()] * 2


@pytest.mark.parametrize('old,new', [((7, 7), (14, 14)), ((3, 2), (6, 4)), ((3, 3), (6, 7))])
def test_copy_resizes_equal_the_matrix_products(old, new):
    """Where a grid axis's resize is a copy (n -> 2n) it runs as an index: the same values as
    the matrix products it replaces, for the maps and for the relations (both axes copied, or
    one: then the keys / queries steps mix index and product)."""
    from mmdyn.models.classifiers.dvt import resize_grid, resize_matrix
    x = torch.randn(2, 3, *old)
    want = resize_matrix(old[0], new[0]) @ x @ resize_matrix(old[1], new[1]).t()
    torch.testing.assert_close(resize_grid(x, new), want, rtol=1e-6, atol=1e-6)
    n = 1 + old[0] * old[1]
    rel = torch.randn(2, 4, n, n)
    # the relation by its definition: every query row's spatial keys, then every key column's
    # spatial queries, resized with the matrices; the class token's row / column carried
    k = torch.cat([rel[..., :1], (want_fn := lambda t: (
        resize_matrix(old[0], new[0]) @ t.reshape(*t.shape[:-1], *old)
        @ resize_matrix(old[1], new[1]).t()).flatten(-2))(rel[..., 1:])], dim=-1)
    kt = k.transpose(2, 3)
    q = torch.cat([kt[..., :1], want_fn(kt[..., 1:])], dim=-1).transpose(2, 3)
    got = upsample_relation(rel, old, new)
    assert got.shape == (2, 4, 1 + new[0] * new[1], 1 + new[0] * new[1])
    torch.testing.assert_close(got, q, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('exits', [(2, 4), (2, 3)])  # 2x2 -> 4x4 copies, 2x2 -> 3x3 products
def test_reused_features_equal_each_module(exits):
    """The downstream exit runs its blocks' feature-reuse MLPs together (stacked weights, one
    resize): every block's features equal its own module's output (LayerNorm, the two linears)
    resized on the grid, class token zero; gradients reach every module's parameters as they
    would one module at a time."""
    from mmdyn.models.classifiers.dvt import resize_grid
    m = make(reuse=True, exits=exits).train()
    e1, e2 = m.exits
    b, p = 3, exits[0] ** 2
    prev = torch.randn(b, p, e1.embed_dims, requires_grad=True)
    got = e2.reused_features(prev, (exits[1], exits[1]))
    assert got.shape == (e2.depth, b, 1 + exits[1] ** 2, e2.feature_dims)
    want = []
    for mod in e2.feature_modules:
        f = mod(prev).transpose(1, 2).reshape(b, -1, exits[0], exits[0])
        f = resize_grid(f, (exits[1], exits[1])).flatten(2).transpose(1, 2)
        want.append(torch.cat([f.new_zeros(b, 1, f.shape[-1]), f], dim=1))
    want = torch.stack(want)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float(got[:, :, 0].abs().max()) == 0
    weights = torch.randn_like(want)
    params = [prev] + list(e2.feature_modules.parameters())
    g_got = torch.autograd.grad((got * weights).sum(), params)
    g_want = torch.autograd.grad((want * weights).sum(), params)
    for a, w in zip(g_got, g_want):
        assert float(w.abs().max()) > 0
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='not a 2x2 grid'):
        e2.reused_features(torch.randn(b, p + 1, e1.embed_dims), (exits[1], exits[1]))


# one block's up-sampled relations: batch 3, 2 heads, (1 + 4x4)^2 float32 entries
BLOCK_BYTES = 3 * 2 * 17 * 17 * 4


@pytest.mark.parametrize('chunk_bytes', [1, 2 * BLOCK_BYTES + 1, 1 << 40])
def test_relation_biases_in_parts_equal_the_whole(monkeypatch, chunk_bytes):
    """The up-sampled relations are made a few blocks at a time (one block, two blocks at a
    time with a leftover, all at once): each block gets its heads' slice of the whole
    up-sampled tensor, and the exit's logits do not depend on the part size."""
    import mmdyn.models.classifiers.dvt as dvt_module
    torch.manual_seed(0)
    m = DVTClassifier(arch=dict(TINY, depth=3), exits=(2, 4), patch_size=8, num_classes=NC,
                      feature_reuse=True, relation_reuse=True).eval()
    e1, e2 = m.exits
    x = images(3)
    with torch.no_grad():
        _, state = e1(x)
        rel = e2.relation_module(state['relations'])
        want = upsample_relation(rel, (2, 2), (4, 4)).split(e2.num_heads, dim=1)
        ref_logits = e2(x, state)[0]
        monkeypatch.setattr(dvt_module, 'RELATION_CHUNK_BYTES', chunk_bytes)
        got = list(e2.relation_biases(rel, (4, 4)))
        logits = e2(x, state)[0]
    assert len(got) == e2.depth == 3
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    # the same bias values; a tolerance for kernels that read differently strided masks
    torch.testing.assert_close(logits, ref_logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('feature,relation,exits', [(False, True, (2, 4)), (True, True, (2, 3)),
                                                    (True, False, (2, 4))])
def test_empty_batch_runs_every_exit(feature, relation, exits):
    """An empty batch (e.g. the images left for a later exit when training code calls
    ``run_all`` on a filtered batch) gives empty logits at every exit, with either reuse alone
    and with a copy or a matrix resize."""
    m = DVTClassifier(arch=TINY, exits=exits, patch_size=8, num_classes=NC,
                      feature_reuse=feature, relation_reuse=relation).eval()
    with torch.no_grad():
        outs = m.run_all(torch.zeros(0, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(0, NC), (0, NC)]


@pytest.mark.parametrize('reuse', [False, True])
def test_empty_batch_runs_every_t2t_exit(reuse):
    """The same with T2T-ViT exits (their tokenizer's token maps: no size to infer)."""
    m = make_t2t(reuse)
    with torch.no_grad():
        outs = m.run_all(torch.zeros(0, 3, 64, 64))
        logits, exit_idx, _ = m.early_exit(torch.zeros(0, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(0, NC), (0, NC)]
    assert tuple(logits.shape) == (0, NC) and exit_idx.numel() == 0
