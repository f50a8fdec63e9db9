"""DoViT backbone: exactness against the static ViT, separate self-attention against a per-image
reference, batch independence, realised FLOPs, records, errors."""
import pytest
import torch
import torch.nn.functional as F

from mmdyn.models.backbones import DoViT, ViT
from mmdyn.models.layers.attention import nlc_to_nchw
from mmdyn.models.utils.dynamic import full_compute, override_decisions

ARCH = dict(embed_dims=32, depth=6, num_heads=2, mlp_ratio=2)
IMG = 64  # 4 x 4 = 16 patch tokens


def _build(threshold=1.0, merge=True, out_indices=(1, 3, 5), decision_layers=(2, 4), seed=0,
           num_classes=5, aux_head='conv1x1', **kw):
    torch.manual_seed(seed)
    m = DoViT(arch=ARCH, num_classes=num_classes, decision_layers=decision_layers,
              threshold=threshold, merge_tokens=merge, img_size=IMG, out_indices=out_indices,
              aux_head=aux_head, **kw)
    m.init_weights()
    with torch.no_grad():  # spread the auxiliary confidences so that thresholds bite
        for h in m.aux_heads:
            h.conv_seg.weight.mul_(40. if aux_head == 'conv1x1' else 100.)
    return m.eval()


def _static_twin(m, out_indices=(1, 3, 5)):
    v = ViT(arch=ARCH, img_size=IMG, out_indices=out_indices).eval()
    missing, unexpected = v.load_state_dict(m.state_dict(), strict=False)
    assert not missing and all(k.startswith('aux_heads.') for k in unexpected)
    return v


def _reference(m, img, thresholds):
    """Independent per-image DoViT: a plain loop that runs every block on the kept tokens only
    (no padding, no mask), Eq. 4/5 cumulative stops, Eq. 8 merging at decision points where
    more than ``agg_rate`` of the N + 1 tokens have stopped; confidence: max softmax of a
    token's prediction, averaged over its sub-pixels."""
    x, hw = m.embed(img)
    x = x[0]
    n = x.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    outs, counts = [], []
    dec = {d - 1: k for k, d in enumerate(m.decision_layers)}
    for i, blk in enumerate(m.blocks):
        idx = keep.nonzero()[:, 0]
        counts.append(len(idx))
        x = x.clone()
        x[idx] = blk(x[idx][None])[0]
        if i == m.depth - 1:
            x = m.norm(x)
        if i in m.out_indices:
            outs.append(nlc_to_nchw(x[None, 1:], hw))
        if i in dec:
            k = dec[i]
            lg = m.aux_heads[k]([nlc_to_nchw(x[None, 1:], hw)])
            s = lg.shape[-1] // hw[1]
            conf = F.avg_pool2d(lg.softmax(1).amax(1, keepdim=True), s).flatten()
            keep[1:] &= ~(conf > thresholds[k])
            stopped = ~keep[1:]
            if m.merge_tokens and stopped.sum() / n > m.agg_rate:
                x = x.clone()
                x[0] = (x[0] + x[1:][stopped].mean(0)) / 2
    return outs, counts


def _median_threshold(m, x):
    """A threshold at the median confidence of the first decision point (images differ)."""
    old = m.threshold
    m.threshold = 1.0
    with torch.no_grad():
        m(x)
    m.threshold = old
    return safe_threshold(m.last_confidences[0])


def safe_threshold(conf):
    """Midpoint of the widest gap between sorted confidences in their middle half: no token
    sits near the threshold, so rounding cannot flip a decision between batch layouts."""
    c = conf.flatten().sort().values.double()
    n = len(c)
    lo, hi = n // 4, 3 * n // 4
    gaps = c[lo + 1:hi + 1] - c[lo:hi]
    j = lo + int(gaps.argmax())
    return float((c[j] + c[j + 1]) / 2)


@pytest.mark.parametrize('merge', [True, False])
def test_xi_one_equals_static_vit(merge):
    m = _build(threshold=1.0, merge=merge)
    v = _static_twin(m)
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        outs, ref = m(x), v(x)
    assert len(outs) == 3
    for a, b in zip(outs, ref):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(m.last_stats['kept_ratio'], torch.ones(3))
    assert torch.allclose(m.last_stats['flops_ratio'], torch.ones(3))
    assert len(m.aux_logits) == 2 and m.aux_logits[0].shape == (3, 5, 4, 4)


def test_force_full_equals_static_vit_at_any_threshold():
    m = _build(threshold=0.0)
    v = _static_twin(m)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad(), full_compute(m):
        outs = m(x)
        ref = v(x)
    for a, b in zip(outs, ref):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(m.last_block_tokens, torch.full((2, 6), 17., dtype=torch.float64))
    with torch.no_grad():  # outside the block the gates act again
        m(x)
    assert m.last_block_tokens[0, -1] == 1


def test_everything_stopped_at_first_decision():
    m = _build(threshold=0.0, out_indices=(5, ))
    v = _static_twin(m, out_indices=(1, ))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        out, = m(x)
        # every patch token stops after block 2: it carries its block-2 features, final-normed
        feats, hw = v.embed(x)
        for blk in v.blocks[:2]:
            feats = blk(feats, hw)
        expect = nlc_to_nchw(v.norm(feats)[:, 1:], hw)
    assert torch.allclose(out, expect, atol=1e-5)
    assert m.last_block_tokens.tolist() == [[17, 17, 1, 1, 1, 1]] * 2
    assert torch.equal(m.last_maps['keep_0'], torch.zeros(2, 4, 4))
    assert torch.equal(m.last_stats['kept_ratio_d0'], torch.zeros(2))
    assert torch.allclose(m.last_stats['kept_ratio'], torch.full((2, ), 2 / 6))
    # only the class token runs on: cheaper than two dense blocks + the rest
    n = 17
    expect_flops = m.patch_embed.flops((IMG, IMG)) + sum(
        m.blocks[i].flops(n if i < 2 else 1) for i in range(6)) + 2 * 16 * 32 * 5
    assert torch.equal(m.last_flops, torch.full((2, ), float(expect_flops),
                                                dtype=torch.float64))


@pytest.mark.parametrize('merge,aux_head,agg_rate', [(True, 'conv1x1', 0.1),
                                                    (False, 'conv1x1', 0.1),
                                                    (True, 'conv1x1', 0.0),
                                                    (True, 'setr_up', 0.1),
                                                    (True, 'fcn', 0.0)])
def test_matches_per_image_reference(merge, aux_head, agg_rate):
    m = _build(merge=merge, aux_head=aux_head, agg_rate=agg_rate)
    x = torch.randn(4, 3, IMG, IMG)
    thr = _median_threshold(m, x)
    m.threshold = [thr, thr + (1 - thr) / 2]
    with torch.no_grad():
        outs = m(x)
        counts = m.last_block_tokens
        assert len(set(counts[:, -1].tolist())) > 1, 'images should keep different sets'
        assert (counts[:, -1] < 17).any()
        for b in range(4):
            ref, ref_counts = _reference(m, x[b:b + 1], m.threshold)
            assert counts[b].tolist() == ref_counts
            for a, r in zip(outs, ref):
                assert torch.allclose(a[b:b + 1], r, atol=1e-5)


def test_merging_changes_result_when_tokens_stop():
    x = torch.randn(2, 3, IMG, IMG)
    m = _build()
    thr = _median_threshold(m, x)
    m.threshold = thr
    with torch.no_grad():
        a = m(x)[-1]
        m.merge_tokens = False
        b = m(x)[-1]
    assert not torch.allclose(a, b, atol=1e-4)


def test_image_alone_equals_in_batch():
    m = _build()
    x = torch.randn(5, 3, IMG, IMG)
    m.threshold = _median_threshold(m, x)
    with torch.no_grad():
        batch = m(x)
        flops, counts = m.last_flops.clone(), m.last_block_tokens.clone()
        assert len(set(counts[:, -1].tolist())) > 1
        for b in range(5):
            alone = m(x[b:b + 1])
            for a, c in zip(batch, alone):
                assert torch.allclose(a[b:b + 1], c, atol=1e-5)
            assert m.last_flops[0] == flops[b]
            assert torch.equal(m.last_block_tokens[0], counts[b])


def test_realised_flops_equal_block_sum_of_kept_counts():
    m = _build()
    x = torch.randn(3, 3, IMG, IMG)
    m.threshold = _median_threshold(m, x)
    with torch.no_grad():
        m(x)
    # independent kept counts from the decision maps: blocks 1-2 dense, 3-4 after decision 0,
    # 5-6 after decision 1 (+1: the class token)
    k0 = m.last_maps['keep_0'].flatten(1).sum(1)
    k1 = m.last_maps['keep_1'].flatten(1).sum(1)
    assert (k1 <= k0).all() and (k0 < 16).any()
    per_block = [torch.full((3, ), 16.)] * 2 + [k0] * 2 + [k1] * 2
    for b in range(3):
        expect = m.patch_embed.flops((IMG, IMG)) + 2 * 16 * 32 * 5
        expect += sum(int(m.blocks[i].flops(int(per_block[i][b]) + 1)) for i in range(6))
        assert m.last_flops[b].item() == expect
    assert (m.last_flops < m.static_flops((IMG, IMG))).any()
    assert torch.allclose(m.last_stats['flops_ratio'],
                          (m.last_flops / m.static_flops((IMG, IMG))).float())
    # a lower threshold never costs more
    f_hi = m.last_flops.clone()
    m.threshold = m.threshold / 2
    with torch.no_grad():
        m(x)
    assert (m.last_flops <= f_hi).all()


def test_realised_flops_match_ops_that_ran():
    """The realised FLOPs against a count of the ops that actually ran (torch's
    ``FlopCounterMode`` on the explicit-attention path), for one image whose tokens stop at both
    decisions. Our FLOPs are multiply-adds, the counter counts 2 per multiply-add. Covered: the
    patch embedding, the auxiliary heads' convolutions, every linear of the blocks and the
    attention matmuls on the tokens still running. Counted by neither: the confidences (softmax,
    pooling), the gathers and scatters of the running tokens, merging, norms and biases."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmdyn.models.layers.attention import explicit_attention
    m = _build()
    x = torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    m.threshold = _median_threshold(m, x)
    with explicit_attention(m), FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    k0, k1 = int(m.last_maps['keep_0'].sum()), int(m.last_maps['keep_1'].sum())
    assert 0 < k1 <= k0 < 16  # real skipping after the first decision
    assert fc.get_total_flops() == 2 * m.last_flops.item()


def test_static_flops_and_breakdown():
    m = _build()
    bd = m.flops_breakdown((IMG, IMG))
    assert bd['aux_heads.0'] == 16 * 32 * 5
    assert m.static_flops((IMG, IMG)) == m.host_static_flops((IMG, IMG)) + 2 * 16 * 32 * 5
    assert m.host_static_flops((IMG, IMG)) == _static_twin(m).static_flops((IMG, IMG))


def test_train_mode_matches_eval_mode_and_gradients():
    m = _build(train_threshold=None)
    x = torch.randn(2, 3, IMG, IMG)
    m.threshold = _median_threshold(m, x)
    with torch.no_grad():
        ev = m(x)
    m.train()
    tr = m(x)
    for a, b in zip(ev, tr):
        assert torch.allclose(a, b, atol=1e-5)
    loss = tr[-1].square().mean() + sum(lg.square().mean() for lg in m.aux_logits)
    loss.backward()
    assert m.aux_heads[1].conv_seg.weight.grad.abs().sum() > 0
    assert m.blocks[5].attn.q.weight.grad.abs().sum() > 0
    assert m.blocks[0].attn.q.weight.grad.abs().sum() > 0


def test_train_threshold_used_only_in_training():
    m = _build(threshold=0.0, train_threshold=1.0)
    x = torch.randn(1, 3, IMG, IMG)
    m.train()
    m(x)
    assert m.last_block_tokens[0, -1] == 17
    m.eval()
    with torch.no_grad():
        m(x)
    assert m.last_block_tokens[0, -1] == 1


def test_records_and_maps():
    m = _build()
    x = torch.randn(2, 3, IMG, IMG)
    m.threshold = _median_threshold(m, x)
    with torch.no_grad():
        m(x)
    assert set(m.last_maps) == {'conf_0', 'conf_1', 'keep_0', 'keep_1'}
    for v in m.last_maps.values():
        assert v.shape == (2, 4, 4)
    assert len(m.last_confidences) == 2
    c = m.last_confidences[0]
    assert c.shape == (2, 4, 4)
    assert ((c >= 1 / 5 - 1e-6) & (c <= 1)).all()
    assert torch.allclose(c, m.aux_logits[0].softmax(1).amax(1))
    assert torch.equal(m.last_maps['keep_0'], (c <= m.threshold).float())
    # the confidence maps are integer levels (drawn one colour per level), by hand:
    for k in range(2):
        c = m.last_confidences[k]
        lv = m.last_maps[f'conf_{k}']
        assert lv.dtype == torch.long
        edges = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
        expect = sum((c > e).long() for e in edges)
        assert torch.equal(lv, expect)
    assert m.last_flops.dtype == torch.float64 and m.last_flops.shape == (2, )
    assert set(m.last_stats) == {'kept_ratio', 'flops_ratio', 'kept_ratio_d0', 'kept_ratio_d1'}
    rows = m.block_table()
    assert [r['block'] for r in rows] == [f'blocks.{i}' for i in range(6)]
    for r in rows:  # plain Python numbers (get_flops averages and prints them)
        assert list(r) == ['block', 'tokens', 'kept_ratio', 'flops']
        assert type(r['block']) is str
        assert all(type(r[k]) is float for k in ('tokens', 'kept_ratio', 'flops'))
    counts = m.last_block_tokens
    for i, r in enumerate(rows):
        assert r['tokens'] == pytest.approx(float(counts[:, i].mean()))
        assert r['flops'] == pytest.approx(
            sum(m.blocks[i].flops(int(c)) for c in counts[:, i]) / 2)
    assert rows[0]['kept_ratio'] == 1.0 and rows[-1]['kept_ratio'] < 1.0
    assert m.patch_embed.flops((IMG, IMG)) + 2 * 16 * 32 * 5 + sum(
        r['flops'] for r in rows) == pytest.approx(float(m.last_flops.mean()))


def test_default_decision_layers_and_full_size_counts():
    with torch.device('meta'):
        b = DoViT('vit-b', num_classes=150)
        s = DoViT('deit-s', num_classes=19)
        lg = DoViT('vit-l', num_classes=19)
    assert b.decision_layers == (2, 5, 8) and s.decision_layers == (2, 5, 8)
    assert lg.decision_layers == (6, 12, 18)
    aux = sum(p.numel() for p in b.aux_heads.parameters())
    assert aux == 3 * (768 * 256 + 2 * 256 + 256 * 150 + 150)  # FCN heads
    # static host ViT-B on 512x512: 1024 patches + cls; blocks dominate
    n = 1025
    blk = 4 * n * 768 ** 2 + 2 * n * n * 768 + 2 * n * 768 * 3072
    assert b.host_static_flops((512, 512)) == b.patch_embed.flops((512, 512)) + 12 * blk


def test_bad_inputs():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DoViT(arch=ARCH, threshold=1.5)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DoViT(arch=ARCH, threshold=-0.1)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DoViT(arch=ARCH, decision_layers=(2, 4), threshold=[0.9, 2.0])
    with pytest.raises(ValueError, match='one per decision layer'):
        DoViT(arch=ARCH, decision_layers=(2, 4), threshold=[0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match='out of range'):
        DoViT(arch=ARCH, decision_layers=(0, 3))
    with pytest.raises(ValueError, match='out of range'):
        DoViT(arch=ARCH, decision_layers=(2, 6))
    with pytest.raises(ValueError, match='strictly increasing'):
        DoViT(arch=ARCH, decision_layers=(4, 2))
    with pytest.raises(ValueError, match='strictly increasing'):
        DoViT(arch=ARCH, decision_layers=(2, 2))
    with pytest.raises(ValueError, match='does not divide'):
        DoViT(arch=dict(embed_dims=30, depth=4, num_heads=4, mlp_ratio=2))
    with pytest.raises(ValueError, match='class token'):
        DoViT(arch=ARCH, with_cls_token=False)
    m = _build()
    m.threshold = 3.0  # e.g. a wrong schedule
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        m(torch.randn(1, 3, IMG, IMG))


def test_forced_keep_ratios_give_exact_counts_and_flops():
    """Benchmark mode: each decision keeps round(r_k * N) patch tokens, the least confident of
    those still kept, whatever the weights; the FLOPs follow the counts."""
    m = _build(decision_override=dict(keep_ratios=(0.5, 0.25)))
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        outs = m(x)
    # 16 patches: 8 kept after block 2, 4 after block 4 (+ the class token)
    assert m.last_block_tokens.tolist() == [[17, 17, 9, 9, 5, 5]] * 3
    assert torch.equal(m.last_stats['kept_ratio_d0'], torch.full((3, ), 0.5))
    assert torch.equal(m.last_stats['kept_ratio_d1'], torch.full((3, ), 0.25))
    assert torch.allclose(m.last_stats['kept_ratio'],
                          torch.full((3, ), (2 * 16 + 2 * 8 + 2 * 4) / (6 * 16)))
    expect = m.patch_embed.flops((IMG, IMG)) + 2 * 16 * 32 * 5 + sum(
        int(m.blocks[i].flops(n)) for i, n in enumerate([17, 17, 9, 9, 5, 5]))
    assert torch.equal(m.last_flops, torch.full((3, ), float(expect), dtype=torch.float64))
    static = m.static_flops((IMG, IMG))
    assert torch.allclose(m.last_stats['flops_ratio'], torch.full((3, ), expect / static))
    assert expect < static
    # the kept tokens are the least confident ones (ties impossible with random weights)
    for b in range(3):
        c0 = m.last_confidences[0][b].flatten()
        kept0 = m.last_maps['keep_0'][b].flatten().bool()
        assert c0[kept0].max() < c0[~kept0].min()
        c1 = m.last_confidences[1][b].flatten()
        kept1 = m.last_maps['keep_1'][b].flatten().bool()
        assert (kept1 <= kept0).all()
        assert c1[kept1].max() < c1[kept0 & ~kept1].min()
    # the same stops under the threshold rule give the same outputs: forcing only picks the set
    ref = _build(decision_override=None)
    for b in range(3):
        # a token stops when conf > thr: thresholds midway between the largest kept and the
        # smallest newly stopped confidence (no token near them, whatever the batch layout)
        thr = []
        prev = torch.ones(16, dtype=torch.bool)
        for k in range(2):
            c = m.last_confidences[k][b].flatten()
            kept = m.last_maps[f'keep_{k}'][b].flatten().bool()
            thr.append(float((c[kept].max() + c[prev & ~kept].min()) / 2))
            prev = kept
        ref.threshold = thr
        with torch.no_grad():
            r = ref(x[b:b + 1])
        assert ref.last_block_tokens[0].tolist() == [17, 17, 9, 9, 5, 5]
        for a, c in zip(outs, r):
            assert torch.allclose(a[b:b + 1], c, atol=1e-5)
    # eval-full still computes everything
    with torch.no_grad(), full_compute(m):
        m(x)
    assert m.last_block_tokens[:, -1].tolist() == [17.] * 3


@pytest.mark.parametrize('ratios,counts', [((1.0, 1.0), [17] * 6),
                                           ((0.0, 0.0), [17, 17, 1, 1, 1, 1]),
                                           ((0.75, 0.75), [17, 17, 13, 13, 13, 13])])
def test_forced_keep_ratio_extremes(ratios, counts):
    m = _build(decision_override=dict(keep_ratios=ratios))
    with torch.no_grad():
        m(torch.randn(2, 3, IMG, IMG))
    assert m.last_block_tokens.tolist() == [counts] * 2


def test_bad_forced_keep_ratios():
    def build(r):
        return DoViT(arch=ARCH, decision_layers=(2, 4), decision_override=dict(keep_ratios=r))

    with pytest.raises(ValueError, match='one per decision layer'):
        build((0.5, ))
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        build((1.5, 0.5))
    with pytest.raises(ValueError, match='non-increasing'):
        build((0.25, 0.5))
    assert build(0.5).decision_override == dict(keep_ratios=(0.5, 0.5))  # one for all
    with pytest.raises(ValueError, match=r'forced_keep_ratios= was removed; use '
                                         r'decision_override=dict\(keep_ratios='):
        DoViT(arch=ARCH, decision_layers=(2, 4), forced_keep_ratios=(0.5, 0.5))


def test_override_context_restores_learned_decisions():
    """``override_decisions`` gives the outputs of the constructor's override; after the
    block the threshold decides again (outputs equal to a forward before entering)."""
    m = _build(threshold=0.5)
    forced = _build(threshold=0.5, decision_override=dict(keep_ratios=(0.5, 0.25)))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        before, ref = m(x), forced(x)
        tokens = m.last_block_tokens.clone()
        with override_decisions(m, keep_ratios=(0.5, 0.25)):
            out = m(x)
            assert m.last_block_tokens.tolist() == [[17, 17, 9, 9, 5, 5]] * 2
        after = m(x)
    assert tokens.tolist() != [[17, 17, 9, 9, 5, 5]] * 2
    for a, b, c, d in zip(out, ref, after, before):
        assert torch.equal(a, b) and torch.equal(c, d)
    assert torch.equal(m.last_block_tokens, tokens)
