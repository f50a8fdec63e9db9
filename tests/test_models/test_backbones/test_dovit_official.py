"""DoViT as the authors' code (FLHonker/DoViT-code) has it: auxiliary heads built from mmseg head
configs (parameter counts of the paper), per-token confidence over sub-pixels, decision
positions per size, ``diff_conf``, ``agg_rate``, per-decision training thresholds on a
schedule. Expected values are hand-computed here, not produced by the code under test."""
import pytest
import torch

from mmdyn.engine.hooks.schedule_hook import _Schedule, get_by_path, set_by_path
from mmdyn.models.backbones import DoViT
from mmdyn.models.backbones.dovit import token_confidence
from mmdyn.models.layers.attention import nlc_to_nchw

ARCH = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2)
IMG = 64  # 4 x 4 = 16 patch tokens, 17 with the class token


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('arch,width,paper', [('vit-s', 384, 0.3), ('vit-b', 768, 0.6),
                                              ('vit-l', 1024, 0.8)])
def test_aux_head_params_match_the_paper(arch, width, paper):
    """Table 1 (Cityscapes, 19 classes): DoViT adds +0.3 / +0.6 / +0.8 M parameters to ViT-S /
    -B / -L. Three FCN heads (1x1 conv E -> 256 without bias, BN 256, 1x1 conv 256 -> 19) or
    three SETR-UP heads (the same plus a LayerNorm on E) give those; the paper's single 1x1
    conv (E -> 19) would add 0.02 / 0.04 / 0.06 M."""
    with torch.device('meta'):
        fcn = DoViT(arch, num_classes=19, aux_head='fcn')
        setr = DoViT(arch, num_classes=19, aux_head='setr_up')
        conv = DoViT(arch, num_classes=19, aux_head='conv1x1')
    one_fcn = width * 256 + 2 * 256 + 256 * 19 + 19
    assert _params(fcn.aux_heads) == 3 * one_fcn
    assert _params(setr.aux_heads) == 3 * (one_fcn + 2 * width)
    assert _params(conv.aux_heads) == 3 * (width * 19 + 19)
    assert round(_params(fcn.aux_heads) / 1e6, 1) == paper
    assert round(_params(setr.aux_heads) / 1e6, 1) == paper
    assert round(_params(conv.aux_heads) / 1e6, 1) < paper - 0.2


def test_default_decision_positions_per_size():
    with torch.device('meta'):
        assert DoViT('vit-s').decision_layers == (2, 5, 8)
        assert DoViT('vit-b').decision_layers == (2, 5, 8)
        assert DoViT('vit-l').decision_layers == (6, 12, 18)


def test_decision_reads_the_output_of_its_block():
    """decision_layers=(2,): the auxiliary head sees the tokens after two blocks (the authors'
    ``out_indices=(2, ...)``: before 0-based block 2)."""
    torch.manual_seed(0)
    m = DoViT(arch=ARCH, num_classes=3, decision_layers=(2, ), threshold=1.0, img_size=IMG,
              out_indices=(3, ), aux_head='conv1x1').eval()
    m.init_weights()
    seen = []
    m.aux_heads[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0][0]))
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        m(x)
        t, hw = m.embed(x)
        for blk in m.blocks[:2]:
            t = blk(t, hw)
    assert torch.allclose(seen[0], nlc_to_nchw(t[:, 1:], hw), atol=1e-6)


def test_setr_confidence_is_the_mean_over_sub_pixels():
    """SETR-UP heads predict 4x4 pixels per token: a token's confidence is the mean of the 16
    pixels' max softmax, and the decision compares that mean with xi."""
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 12, 8) * 3
    conf = token_confidence(logits, (3, 2))
    p = logits.softmax(1).amax(1)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                expect = p[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean()
                assert torch.allclose(conf[b, i, j], expect)
    assert torch.equal(token_confidence(logits, (12, 8)), p)  # no up-sampling: itself
    with pytest.raises(ValueError):
        token_confidence(logits, (5, 2))

    torch.manual_seed(0)
    m = DoViT(arch=ARCH, num_classes=5, decision_layers=(1, ), threshold=1.0, img_size=IMG,
              out_indices=(3, ), aux_head='setr_up').eval()
    m.init_weights()
    img = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        m.aux_heads[0].conv_seg.weight.mul_(200.)
        m(img)
        lg = m.aux_logits[0]
        assert lg.shape[-2:] == (16, 16)  # x4 up-sampled
        c = lg.softmax(1).amax(1)[0]
        tok = torch.stack([c[4 * i:4 * i + 4, 4 * j:4 * j + 4].mean()
                           for i in range(4) for j in range(4)])
        assert torch.allclose(m.last_confidences[0].flatten(), tok)
        srt = tok.sort().values
        m.threshold = float((srt[7] + srt[8]) / 2)  # half of the tokens above
        m(img)
    assert torch.equal(m.last_maps['keep_0'].flatten().bool(), tok <= m.threshold)
    assert m.last_block_tokens.tolist() == [[17, 9, 9, 9]]


def test_diff_conf_stops_near_uniform_tokens():
    """Zero auxiliary weights: every token predicts the uniform distribution over K = 100
    classes, confidence 1/K = 0.01. diff_conf = 0.011 stops them all at the first decision,
    0.009 none (xi = 0.99 stops none either way)."""
    def run(diff):
        torch.manual_seed(0)
        m = DoViT(arch=ARCH, num_classes=100, decision_layers=(1, 2), threshold=0.99,
                  img_size=IMG, out_indices=(3, ), aux_head='conv1x1', diff_conf=diff).eval()
        m.init_weights()
        with torch.no_grad():
            for h in m.aux_heads:
                h.conv_seg.weight.zero_()
                h.conv_seg.bias.zero_()
            m(torch.randn(2, 3, IMG, IMG))
        return m
    m = run(0.011)
    assert torch.allclose(m.last_confidences[0], torch.full((2, 4, 4), 0.01))
    assert m.last_block_tokens.tolist() == [[17, 1, 1, 1]] * 2
    assert run(0.009).last_block_tokens.tolist() == [[17, 17, 17, 17]] * 2
    assert run(None).last_block_tokens.tolist() == [[17, 17, 17, 17]] * 2


def test_merge_rule_agg_rate_by_hand():
    """Eq. 8 with the authors' condition: merge when stopped / (N + 1) > agg_rate."""
    x = torch.zeros(1, 17, 2)
    x[0, 0] = torch.tensor([4., -2.])
    x[0, 1:, 0] = torch.arange(16.)
    x[0, 1:, 1] = 1.
    one = torch.zeros(1, 16, dtype=torch.bool)
    one[0, 3] = True  # 1 / 17 = 0.059 stopped
    two = one.clone()
    two[0, 10] = True  # 2 / 17 = 0.118 stopped
    assert torch.equal(DoViT._merge(x, one, 0.1), x)  # not merged
    out = DoViT._merge(x, two, 0.1)
    # cls <- (cls + mean(tokens 3 and 10)) / 2 = ((4 + 6.5) / 2, (-2 + 1) / 2)
    assert out[0, 0].tolist() == [5.25, -0.5]
    assert torch.equal(out[0, 1:], x[0, 1:])
    assert DoViT._merge(x, one, 0.0)[0, 0].tolist() == [(4 + 3) / 2, -0.5]


@pytest.mark.parametrize('kept,merges', [(15, False), (14, True)])
def test_agg_rate_end_to_end(kept, merges):
    """16 patch tokens, one decision keeping exactly ``kept`` (forced): with agg_rate = 0.1
    the class token is merged only when 2 or more of the 17 tokens stopped."""
    def run(**kw):
        torch.manual_seed(0)
        m = DoViT(arch=ARCH, num_classes=3, decision_layers=(1, ), img_size=IMG,
                  out_indices=(3, ), aux_head='conv1x1', decision_override=dict(keep_ratios=(kept / 16, )),
                  **kw).eval()
        m.init_weights()
        with torch.no_grad():
            return m(torch.randn(1, 3, IMG, IMG))[0]
    ref_merge = run(agg_rate=0.0)
    ref_plain = run(merge_tokens=False)
    assert not torch.allclose(ref_merge, ref_plain)
    out = run(agg_rate=0.1)
    assert torch.equal(out, ref_merge if merges else ref_plain)


def test_per_decision_training_thresholds_on_a_schedule():
    """The authors' ramp ``1 - min(1, t / T) * (1 - xi_k)`` per decision, as linear schedules
    on ``backbone.train_threshold.<k>``; tuples become lists so that entries can be set."""
    m = DoViT(arch=ARCH, num_classes=3, decision_layers=(1, 2), img_size=IMG,
              out_indices=(3, ), threshold=(0.96, 0.95), train_threshold=(1.0, 1.0))
    assert isinstance(m.train_threshold, list) and isinstance(m.threshold, list)

    class Seg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = m
    seg = Seg()
    for k, xi in enumerate((0.96, 0.95)):
        s = _Schedule(dict(path=f'backbone.train_threshold.{k}', type='linear',
                           start_value=1.0, end_value=xi, begin=0, end=140000))
        set_by_path(seg, s.path, s.value(35000))
    # t / T = 0.25: 1 - 0.25 * 0.04 = 0.99 and 1 - 0.25 * 0.05 = 0.9875
    assert get_by_path(seg, 'backbone.train_threshold') == pytest.approx([0.99, 0.9875])
    m.train()
    assert m.thresholds() == pytest.approx([0.99, 0.9875])
    m.eval()
    assert m.thresholds() == pytest.approx([0.96, 0.95])
    set_by_path(seg, 'backbone.threshold.1', 0.9)  # the eval thresholds, per entry too
    assert m.thresholds() == pytest.approx([0.96, 0.9])


def test_aux_head_flops_count_the_heads_convolutions():
    """MACs per head on an h x w map: FCN E*256 + 256*K per token; SETR-UP E*256 per token
    plus 256*K per up-sampled pixel (16 per token); 1x1 conv E*K per token."""
    kw = dict(arch=ARCH, num_classes=7, decision_layers=(1, ), img_size=IMG, out_indices=(3, ))
    with torch.device('meta'):
        fcn = DoViT(aux_head='fcn', **kw)
        setr = DoViT(aux_head='setr_up', **kw)
        conv = DoViT(aux_head='conv1x1', **kw)
    n = 4 * 6
    assert fcn.aux_head_flops((4, 6)) == n * (32 * 256 + 256 * 7)
    assert setr.aux_head_flops((4, 6)) == n * 32 * 256 + 16 * n * 256 * 7
    assert conv.aux_head_flops((4, 6)) == n * 32 * 7
    assert fcn.flops_breakdown((IMG, IMG))['aux_heads.0'] == 16 * (32 * 256 + 256 * 7)


@pytest.mark.parametrize('aux_head', [
    'fcn', 'setr_up', 'conv1x1',
    dict(type='FCNHead', channels=16, num_convs=2, kernel_size=3, dilation=2,
         concat_input=True, norm_cfg=dict(type='BN'), dropout_ratio=0),
    dict(type='SETRUPHead', channels=8, num_convs=2, up_scale=2, kernel_size=3,
         norm_cfg=dict(type='BN'), dropout_ratio=0)])
def test_aux_head_flops_equal_the_ops_a_real_head_runs(aux_head, one_thread):
    """The analytic count of every head layout equals FlopCounterMode's count (2 per MAC) of
    a forward of the real head, on a map of odd size."""
    from torch.utils.flop_counter import FlopCounterMode
    m = DoViT(arch=ARCH, num_classes=5, decision_layers=(1, ), img_size=IMG,
              aux_head=aux_head).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = m.aux_heads[0]([torch.zeros(1, 32, 5, 7)])
    assert out.shape[1] == 5
    assert m.aux_head_flops((5, 7)) == counter.get_total_flops() // 2 > 0


def test_aux_head_that_cannot_be_counted_is_refused():
    with pytest.raises(TypeError, match='cannot count the FLOPs of auxiliary head PSPHead'):
        DoViT(arch=ARCH, num_classes=5, decision_layers=(1, ), img_size=IMG,
              aux_head=dict(type='PSPHead', channels=8, pool_scales=(1, 2)))


def test_bad_arguments():
    kw = dict(arch=ARCH, num_classes=3, decision_layers=(1, ), img_size=IMG)
    with pytest.raises(ValueError, match='aux_head'):
        DoViT(aux_head='nope', **kw)
    with pytest.raises(ValueError, match='agg_rate'):
        DoViT(agg_rate=1.0, **kw)
    with pytest.raises(ValueError, match='diff_conf'):
        DoViT(diff_conf=1.5, **kw)
    with pytest.raises(ValueError, match='in_channels'):
        DoViT(aux_head=dict(type='FCNHead', in_channels=8, channels=8, num_convs=0), **kw)
