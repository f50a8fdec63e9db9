"""MSViT: mixed-scale tokenizer, masked / sparse transformer, records, gate losses, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdyn.engine.hooks.schedule_hook import declared_range, set_by_path
from mmdyn.models.backbones.msvit import MSViT
from mmdyn.models.backbones.vit import ViT
from mmdyn.models.utils.dynamic import evenly_spaced, full_compute, override_decisions
from mmdyn.utils.errors import UserValueError

ARCH = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
GATE = dict(hidden_dims=16)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault('arch', ARCH)
    kw.setdefault('img_size', 64)
    kw.setdefault('gate_cfg', GATE)
    m = MSViT(**kw)
    m.init_weights()
    return m.eval()


def static_like(m, **kw):
    """A static ViT with the same weights as MSViT ``m``."""
    kw.setdefault('interpolate_mode', m.interpolate_mode)
    ref = ViT(arch=ARCH, img_size=m.img_size, patch_size=m.patch_size, out_type=m.out_type,
              out_indices=m.out_indices, **kw)
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith(('tokenizer', 'gate_loss'))}
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def set_gate(m, fine=None, scale=None):
    """Force every region fine (True) / coarse (False), or make the gate input dependent."""
    last = m.tokenizer.gate.proj[-1]
    with torch.no_grad():
        if fine is not None:
            last.weight.zero_()
            last.bias.fill_(50. if fine else -50.)
        if scale is not None:
            last.weight.normal_(0, scale)
            last.bias.zero_()


def mixed_model(seed=0, **kw):
    m = make(seed, **kw)
    set_gate(m, scale=3.0)
    return m


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize('out_type', ['featmap', 'cls_token', 'raw'])
def test_all_fine_equals_static_vit(out_type):
    m = make(out_type=out_type, out_indices=(0, 1))
    ref = static_like(m)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = ref(x)
        with full_compute(m):
            full = m(x)
        set_gate(m, fine=True)  # the gated (token-set) path with every region fine
        sparse = m(x)
    for a, b, c in zip(want, full, sparse):
        assert a.shape == b.shape == c.shape
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        torch.testing.assert_close(c, a, atol=1e-5, rtol=0)
    assert m.last_stats['fine_ratio'].tolist() == [1., 1.]
    assert m.last_maps['fine'].shape == (2, 2, 3)


def test_without_cls_token():
    m = make(with_cls_token=False)
    ref = static_like(m, with_cls_token=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ref(x)[0]
        set_gate(m, fine=True)
        torch.testing.assert_close(m(x)[0], want, atol=1e-5, rtol=0)
        set_gate(m, scale=3.0)
        m(x)
    assert m.last_stats['num_tokens'].tolist() == m.tokens_for(m.last_maps['fine']).tolist()
    assert m.last_stats['num_tokens'].max() < 16


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_all_coarse_equals_static_vit_at_half_size(out_type):
    m = make(out_type=out_type)
    set_gate(m, fine=False)
    # the static ViT at half resolution with the fine position table linearly interpolated
    ref = static_like(m, interpolate_mode='bilinear')
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = m(x)[0]
        want = ref(F.interpolate(x, scale_factor=0.5, mode='bilinear', align_corners=False))[0]
    if out_type == 'featmap':
        assert out.shape == (2, 32, 4, 6) and want.shape == (2, 32, 2, 3)
        # every coarse token copied into its 2x2 fine positions (appendix E.1)
        want = want.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    assert m.last_stats['fine_ratio'].tolist() == [0., 0.]
    assert m.last_stats['num_tokens'].tolist() == [1 + 6, 1 + 6]


def test_coarse_scale_four_times_fine():
    """S_c = 4 S_f: area resizing is the per-patch mean; all-coarse equals the static ViT on
    the image average-pooled by 4."""
    m = make(patch_size=8, coarse_size=32, img_size=64)
    set_gate(m, fine=False)
    ref = static_like(m, interpolate_mode='bilinear')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = m(x)[0]
        want = ref(F.avg_pool2d(x, 4))[0]
    assert out.shape == (1, 32, 8, 8)
    torch.testing.assert_close(out, want.repeat_interleave(4, 2).repeat_interleave(4, 3),
                               atol=1e-5, rtol=0)


def test_coarse_tokens_compile_with_symbolic_sizes():
    """The coarse tokenizer lowers under inductor with dynamic shapes (``'area'`` resizing as
    ``F.interpolate`` was an adaptive pool inductor could not lower at a symbolic size) and
    equals eager at sizes the compiled graph was not traced at, padded ones included."""
    m = make(pad_input=True)

    def coarse(x):
        x = m._prepare(x)
        return m._coarse_tokens(x, m.grids(x.shape[-2:])[1])

    compiled = torch.compile(coarse, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for hw, n in (((64, 96), 6), ((96, 64), 6), ((128, 160), 20), ((70, 100), 12)):
            x = torch.randn(2, 3, *hw)
            out, want = compiled(x), coarse(x)
            assert out.shape == (2, n, 32)
            torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
            # eager: the (zero-padded) image area-resized to the coarse grid's pixels, embedded
            x = m._prepare(x)
            embedded = m.patch_embed(F.interpolate(x, scale_factor=0.5, mode='area'))[0]
            torch.testing.assert_close(want - embedded, (want - embedded)[:1].expand_as(want),
                                       atol=1e-6, rtol=0)


def test_mixed_output_copies_coarse_tokens():
    m = mixed_model(out_type='raw')
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        (raw, ) = m(x)
    fine = m.last_maps['fine']
    assert 0 < fine.mean() < 1
    grid = raw[:, 1:].reshape(2, 4, 6, 32)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                block = grid[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(4, 32)
                same = torch.allclose(block, block[:1].expand(4, -1))
                if fine[b, i, j] == 0:
                    assert same  # one coarse token copied 4 times
                else:
                    assert not same


# ----------------------------------------------------------------------------- batching
def test_alone_equals_in_batch():
    m = mixed_model(out_type='featmap', out_indices=(0, 1))
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        batch = m(x)
        counts = m.last_stats['num_tokens'].clone()
        flops = m.last_flops.clone()
        assert len(set(counts.tolist())) > 1  # different token counts in the batch
        for b in range(3):
            alone = m(x[b:b + 1])
            for o_b, o_a in zip(batch, alone):
                torch.testing.assert_close(o_b[b:b + 1], o_a, atol=1e-5, rtol=0)
            assert m.last_stats['num_tokens'].item() == counts[b].item()
            assert m.last_flops.item() == flops[b].item()


@pytest.mark.parametrize('trim', [True, False])
def test_train_masked_attention_equals_eval_sparse(trim):
    m = mixed_model(out_type='featmap', adaptive_trimming=trim, gate_loss='l0')
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        want = m(x)[0]
        want_map = m.last_maps['fine'].clone()
    m.train()
    m.stochastic_gate = False  # gate fixed: deterministic threshold with straight-through
    out = m(x)[0]
    assert torch.equal(m.last_maps['fine'], want_map)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    # the masked path carries the straight-through gradient to the gate
    (out.square().mean() + sum(m.aux_losses.values())).backward()
    g = m.tokenizer.fc_in.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_masked_block_ignores_inactive_tokens():
    m = make()
    blk = m.blocks[0]
    x = torch.randn(2, 7, 32)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0, 1], [1, 0, 1, 1, 1, 0, 0]], dtype=torch.float)
    with torch.no_grad():
        out = blk.forward_masked(x, mask)
        for b in range(2):
            keep = mask[b].bool()
            alone = blk(x[b:b + 1, keep])
            torch.testing.assert_close(out[b, keep], alone[0], atol=1e-5, rtol=0)
            # garbage in inactive tokens changes nothing for the active ones
            y = x.clone()
            y[b, ~keep] = 1e3 * torch.randn_like(y[b, ~keep])
            torch.testing.assert_close(blk.forward_masked(y, mask)[b, keep],
                                       out[b, keep], atol=1e-4, rtol=0)


def test_adaptive_trimming_runs_batch_max_tokens():
    m = mixed_model(gate_loss=None)
    m.train()
    x = torch.randn(3, 3, 64, 96)
    seen = []
    h = m.blocks[0].norm1.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].shape[1]))
    try:
        m(x)
        n_trim = m.last_stats['num_tokens'].max().item()
        m.adaptive_trimming = False
        m(x)
    finally:
        h.remove()
    # trimmed: the largest active count of the batch; untrimmed: every coarse and fine token
    assert seen == [n_trim, 1 + 6 + 24]


# ----------------------------------------------------------------------------- gate
def test_gate_starts_fine_and_is_stochastic_in_training():
    m = make()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        m(x)
    assert m.last_stats['fine_ratio'].tolist() == [1.] * 4  # last bias: every region fine
    set_gate(m, scale=0.0)  # logit 0: p(fine) = 0.5
    m.train()
    torch.manual_seed(1)
    maps = []
    for _ in range(4):
        m(x)
        maps.append(m.last_maps['fine'])
    maps = torch.stack(maps)
    assert set(maps.unique().tolist()) == {0., 1.}  # hard decisions
    assert 0.2 < maps.mean() < 0.8


def test_gate_tau_and_threshold():
    m = make(gate_cfg=dict(hidden_dims=16, tau=0.7, threshold=0.6, num_layers=3))
    assert m.tokenizer.tau == 0.7 and m.tokenizer.threshold == 0.6
    assert sum(isinstance(l, torch.nn.Linear) for l in m.tokenizer.gate.proj) == 2
    set_gate(m, fine=True)
    with torch.no_grad():
        m.tokenizer.gate.proj[-1].bias.fill_(math.log(0.55 / 0.45))  # 0.55 < threshold
        m(torch.randn(1, 3, 64, 64))
    assert m.last_stats['fine_ratio'].item() == 0.


def test_gate_position_encoding_after_first_layer():
    m = make()
    x = torch.zeros(1, 3, 64, 64)  # every region identical: only the position differs
    with torch.no_grad():
        m.tokenizer.pos_embed.normal_(0, 1)
        set_gate(m, scale=1.0)
        logits = m.tokenizer.logits(x)
    assert logits.shape == (1, 2, 2)
    assert logits.flatten().unique().numel() == 4


@pytest.mark.parametrize('kind,name', [('l0', 'loss_gate_l0'), ('bas', 'loss_gate_bas'),
                                       ('gbas', 'loss_gate_gbas')])
def test_gate_losses(kind, name):
    m = mixed_model(gate_loss=kind, target=0.25, loss_weight=4.0)
    m.train()
    m.stochastic_gate = False  # soft gate values = sigmoid(logits), no Gumbel noise
    x = torch.randn(4, 3, 64, 64)
    m(x)
    assert set(m.aux_losses) == {name}
    loss = m.aux_losses[name]
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    # the wiring: the loss is the loss module applied to the gate's probabilities, computed
    # here from the gate's own logits ([B, 2, 2] for gBaS, flattened to [B, 4] otherwise)
    with torch.no_grad():
        probs = torch.sigmoid(m.tokenizer.logits(x))
        assert probs.shape == (4, 2, 2)
        want = m.gate_loss(probs if kind == 'gbas' else probs.flatten(1))
        wrong = m.gate_loss(m.tokenizer.logits(x).flatten(1) if kind != 'gbas'
                            else m.tokenizer.logits(x))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(want, wrong)  # logits instead of probabilities would differ
    assert m.gate_loss.loss_weight == 4.0
    loss.backward()
    assert m.tokenizer.fc_in.weight.grad.abs().sum() > 0
    if kind == 'gbas':
        assert m.gate_loss.prior_logits.shape == (2, 2)
        assert m.gate_loss.prior_logits.grad is not None
        assert m.gate_loss.target == 0.25


@pytest.mark.parametrize('kind,name', [('l0', 'loss_gate_l0'), ('bas', 'loss_gate_bas'),
                                       ('gbas', 'loss_gate_gbas')])
def test_scheduled_loss_settings_reach_the_loss(kind, name):
    """``backbone.loss_weight`` (and ``target``) set after construction, as DynamicScheduleHook
    sets them, change the gate loss the model computes (they were inert copies once)."""
    m = mixed_model(gate_loss=kind, target=0.25, loss_weight=4.0)
    root = torch.nn.Module()
    root.backbone = m
    m.train()
    m.stochastic_gate = False
    x = torch.randn(4, 3, 64, 64)
    m(x)
    before = m.aux_losses[name].detach()
    assert declared_range(root, 'backbone.loss_weight')[1] == (0.0, None)
    set_by_path(root, 'backbone.loss_weight', 1.0)
    assert m.loss_weight == m.gate_loss.loss_weight == 1.0
    m(x)
    torch.testing.assert_close(m.aux_losses[name].detach(), before / 4, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match='loss_weight'):
        m.loss_weight = -1.0
    if kind == 'bas':  # its prior is built from the target once: refused, not ignored
        with pytest.raises(UserValueError, match="'bas' gate loss"):
            set_by_path(root, 'backbone.target', 0.5)
        assert m.target == 0.25
    else:
        set_by_path(root, 'backbone.target', 0.75)
        assert m.target == m.gate_loss.target == 0.75
        m(x)
        assert not torch.allclose(m.aux_losses[name].detach(), before / 4)
    with pytest.raises(ValueError, match=r'g\* must be in \(0, 1\)'):
        m.target = 1.0


def test_no_gate_loss_left_from_an_earlier_forward():
    """A forward that computes no gate loss (eval, a frozen gate, imposed decisions) leaves
    none behind from the training forward before it."""
    m = mixed_model()
    x = torch.randn(2, 3, 64, 64)
    for switch in ('eval', 'freeze', 'override'):
        m.train()
        m(x)
        assert set(m.aux_losses) == {'loss_gate_gbas'}
        if switch == 'eval':
            m.eval()
        elif switch == 'freeze':
            m.freeze_gate = True
        else:
            m.set_decision_override(dict(fine_ratio=0.5))
        m(x)
        assert m.aux_losses == {}
        m.freeze_gate = False
        m.set_decision_override(None)


def test_gbas_center_init_and_eval_has_no_loss():
    m = make(gate_loss=dict(type='gbas', center_init=True))
    assert m.gate_loss.hyperprior_std == 0.1 and m.gate_loss.temperature == 0.3
    assert m.gate_loss.clamp_eps == 1e-3
    with torch.no_grad():
        m(torch.randn(2, 3, 64, 64))
    assert m.aux_losses == {}


def test_gate_grad_mult():
    grads = []
    for mult in (1.0, 0.25):
        m = mixed_model(gate_loss='l0')
        m.train()
        m.stochastic_gate = False
        m.gate_grad_mult = mult
        out = m(torch.randn(2, 3, 64, 64))[0]
        (out.square().mean() + sum(m.aux_losses.values())).backward()
        grads.append(m.tokenizer.fc_in.weight.grad.clone())
    torch.testing.assert_close(grads[1], 0.25 * grads[0])


def test_freeze_gate():
    m = mixed_model(freeze_gate=True)
    m.train()
    assert not any(p.requires_grad for p in m.tokenizer.parameters())
    assert not m.tokenizer.training
    x = torch.randn(2, 3, 64, 64)
    out = m(x)[0]
    assert m.aux_losses == {}
    m1 = m.last_maps['fine'].clone()
    m(x)
    assert torch.equal(m.last_maps['fine'], m1)  # deterministic
    out.sum().backward()
    assert m.blocks[0].attn.q.weight.grad is not None


def test_load_gate_from_checkpoint(tmp_path):
    src = mixed_model(seed=3)
    ckpt = tmp_path / 'msvit.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}},
               str(ckpt))
    dst = make(seed=4, gate_checkpoint=str(ckpt), freeze_gate=True)
    for k, v in src.tokenizer.state_dict().items():
        assert torch.equal(dst.tokenizer.state_dict()[k], v)
    assert not torch.equal(dst.blocks[0].attn.q.weight, src.blocks[0].attn.q.weight)
    with pytest.raises(ValueError, match='no gate'):
        dst.load_gate(str(ckpt), prefix='model.')


# ----------------------------------------------------------------------------- FLOPs
def test_flops_match_independent_count_and_fall():
    m = mixed_model()
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        m(x)
    fine = m.last_maps['fine']
    k = fine.flatten(1).sum(1)
    n = 1 + (6 - k) + 4 * k
    assert m.last_stats['num_tokens'].tolist() == n.tolist()
    pe = m.patch_embed.projection
    embed = (24 + 6) * pe.in_channels * pe.out_channels * 16 * 16
    gate = 6 * (3 * 32 * 32 * 16 + 16 * 16 * 2 + 16)
    for b in range(3):
        blocks = sum(blk.flops(int(n[b])) for blk in m.blocks)
        assert m.last_flops[b].item() == embed + gate + blocks
    static = m.static_flops((64, 96))
    assert static == ViT(arch=ARCH, img_size=64).static_flops((64, 96))
    torch.testing.assert_close(m.last_stats['flops_ratio'].double(), m.last_flops / static)
    # all fine costs more than the static model (gate + coarse embedding), all coarse far less
    costs = []
    for f in (True, False):
        set_gate(m, fine=f)
        with torch.no_grad():
            m(x)
        costs.append(m.last_flops[0].item())
    assert costs[0] == static + gate + 6 * pe.in_channels * pe.out_channels * 256
    assert costs[1] < costs[0]
    assert costs[1] == embed + gate + sum(blk.flops(1 + 6) for blk in m.blocks)
    with torch.no_grad(), full_compute(m):
        m(x)
    assert m.last_flops.tolist() == [static] * 3


@pytest.mark.parametrize('shape', [(64, 96), (70, 50), (33, 100)])
def test_flops_breakdown_is_of_the_padded_input(shape):
    """The per-part MACs get_flops prints sum to the static count on the padded input (what
    runs: every region whole), also when the image is not whole coarse regions."""
    m = make()
    parts = m.flops_breakdown(shape)
    assert sum(parts.values()) == m.static_flops(shape)
    ph, pw = m.padded_shape(shape)
    pe = m.patch_embed.projection
    assert parts['patch_embed'] == (ph // 16) * (pw // 16) * pe.in_channels * pe.out_channels \
        * 16 * 16
    with torch.no_grad(), full_compute(m):
        m(torch.randn(1, 3, *shape))
    assert m.last_flops.item() == sum(parts.values())


def test_last_stats_keys_for_get_flops():
    """get_flops.py prints the mean over images of every ``last_stats`` key and the averaged
    ``block_table()``: each key is what its name says, per image."""
    from mmdyn.models.utils.dynamic import collect_dynamic_records
    m = mixed_model()
    x = torch.randn(3, 3, 64, 96)  # 2x3 regions, 4x6 fine patches
    with torch.no_grad():
        m(x)
    st = m.last_stats
    assert set(st) == {'fine_ratio', 'flops_ratio', 'kept_ratio', 'num_tokens',
                       'num_patch_tokens', 'num_fine_regions'}
    k = m.last_maps['fine'].flatten(1).sum(1)
    assert 0 < k.sum() < 18
    n = 1 + (6 - k) + 4 * k
    assert st['num_fine_regions'].tolist() == k.tolist()
    assert st['num_tokens'].tolist() == n.tolist()  # cls included
    assert st['num_patch_tokens'].tolist() == (n - 1).tolist()  # the paper's token count
    torch.testing.assert_close(st['fine_ratio'], k / 6)
    torch.testing.assert_close(st['kept_ratio'], (n - 1) / 24)
    torch.testing.assert_close(st['flops_ratio'].double(),
                               m.last_flops / m.static_flops((64, 96)), rtol=1e-6, atol=0)
    rec = collect_dynamic_records(m)
    assert set(rec) == set(st) | {'flops'}
    rows = m.block_table()
    assert [r['block'] for r in rows] == ['blocks.0', 'blocks.1']
    for r, blk in zip(rows, m.blocks):
        assert r['tokens'] == pytest.approx(n.double().mean().item())
        assert r['flops'] == pytest.approx(sum(blk.flops(int(v)) for v in n) / 3)
    assert sum(r['flops'] for r in rows) + m.overhead_flops((64, 96)) == pytest.approx(
        m.last_flops.mean().item())
    with torch.no_grad(), full_compute(m):
        m(x)
    assert m.last_stats['num_patch_tokens'].tolist() == [24.] * 3
    assert m.block_table()[0]['tokens'] == 25


def test_realised_tokens_are_what_ran():
    m = mixed_model()
    x = torch.randn(1, 3, 64, 96)
    seen = []
    h = m.blocks[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        m(x)
    h.remove()
    assert seen == [int(m.last_stats['num_tokens'].item())]


def test_expected_cost_is_differentiable():
    m = mixed_model()
    m.train()
    m(torch.randn(2, 3, 64, 64))
    e = m.expected_cost
    assert e.shape == (2, ) and e.requires_grad
    e.sum().backward()
    assert m.tokenizer.fc_in.weight.grad.abs().sum() > 0


def test_full_size_gate_cost_and_archs():
    with torch.device('meta'):
        s = MSViT(arch='vit-s')
        t = MSViT(arch='vit-t', gate_loss='l0')
        l = MSViT(arch='vit-l', gate_loss=None)
        seg = MSViT(arch='vit-s', img_size=512)
    # paper: the gate adds 0.017 GMACs to ViT-S at 224
    assert s.gate_flops((224, 224)) / 1e9 == pytest.approx(0.017, rel=0.03)
    assert s.static_flops((224, 224)) / 1e9 == pytest.approx(4.60, rel=0.01)
    assert seg.static_flops((512, 512)) / 1e10 == pytest.approx(3.17, rel=0.01)  # Seg-S/16
    assert (t.embed_dims, l.embed_dims, l.depth) == (192, 1024, 24)
    assert seg.gate_loss.prior_shape == (16, 16) and s.gate_loss.prior_shape == (7, 7)
    # half the regions coarse at 224: 24.5 * 4 + 24.5 + 1 tokens
    assert s.flops_summary(fine_ratio=0.5)['num_tokens'] == 123.5


# ----------------------------------------------------------------------------- bad input
def test_padding_of_inputs_not_multiple_of_coarse_scale():
    m = mixed_model()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        out = m(x)[0]
        want = m(F.pad(x, (0, 26, 0, 14)))[0]
    assert out.shape == (1, 32, 4, 6)
    torch.testing.assert_close(out, want)
    assert m.static_flops((50, 70)) == m.static_flops((64, 96))
    strict = make(pad_input=False)
    with pytest.raises(ValueError, match='not a multiple of the coarse scale'):
        strict(x)


@pytest.mark.parametrize('kw,err', [
    (dict(patch_size=16, coarse_size=24), 'must divide'),
    (dict(patch_size=16, coarse_size=16), 'must divide'),
    (dict(patch_size=32, coarse_size=16), 'must divide'),
    (dict(target=0.0), r'g\* must be in \(0, 1\)'),
    (dict(target=1.0), r'g\* must be in \(0, 1\)'),
    (dict(target=-0.5), r'g\* must be in \(0, 1\)'),
    (dict(gate_loss='kl'), 'gate_loss type'),
    (dict(gate_cfg=dict(width=3)), 'unknown gate_cfg'),
    (dict(gate_cfg=dict(init_fine_prob=1.0)), 'init_fine_prob'),
    (dict(coarse_resize_mode='bicubic'), 'coarse_resize_mode'),
])
def test_bad_config(kw, err):
    with pytest.raises((ValueError, KeyError), match=err):
        MSViT(arch=ARCH, img_size=64, **kw)


def test_bad_image():
    m = make()
    with pytest.raises(ValueError, match='expects'):
        m(torch.randn(1, 1, 64, 64))


def test_empty_batch():
    """No image (e.g. a filtered batch): empty outputs of the shapes one image gives, in eval
    and in training."""
    m = mixed_model(out_indices=(0, 1))
    for train in (False, True):
        m.train(train)
        one = m(torch.randn(1, 3, 64, 64))
        none = m(torch.zeros(0, 3, 64, 64))
        assert [tuple(o.shape) for o in none] == [(0, ) + tuple(o.shape[1:]) for o in one]
        assert m.last_flops.shape == (0, )
    assert m.aux_losses['loss_gate_gbas'].item() == 0  # nothing to shape


def test_load_gate_trained_at_another_size(tmp_path):
    """An ImageNet gate (7x7 table at 224) into a 512 model: its table is resized."""
    src = make(img_size=224)
    ckpt = tmp_path / 'in1k.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}},
               str(ckpt))
    dst = make(img_size=512, gate_checkpoint=str(ckpt), freeze_gate=True)
    assert dst.tokenizer.pos_embed.shape == (1, 256, 16)
    torch.testing.assert_close(dst.tokenizer.fc_in.weight, src.tokenizer.fc_in.weight)
    # the exact bilinear resize of the 7x7 source table to the 16x16 grid (written here with
    # F.interpolate on the [1, C, 7, 7] grid, not with the library's resize helper)
    grid = src.tokenizer.pos_embed.detach().reshape(1, 7, 7, 16).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(16, 16), mode='bilinear', align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, 256, 16)
    torch.testing.assert_close(dst.tokenizer.pos_embed.detach(), want, atol=1e-6, rtol=0)
    assert not torch.allclose(want, torch.zeros_like(want), atol=1e-3)  # a real table
    # the same through init_cfg (the whole backbone's checkpoint): the table is resized too,
    # not left at its random initialisation
    whole = make(img_size=512, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                              prefix='backbone.'))
    torch.testing.assert_close(whole.tokenizer.pos_embed.detach(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole.tokenizer.fc_in.weight, src.tokenizer.fc_in.weight)


def test_pretrained_msvit_checkpoint_keeps_its_gate(tmp_path):
    src = mixed_model(seed=5)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}},
               str(ckpt))
    dst = make(seed=6, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                     prefix='backbone.'))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


# ----------------------------------------------------------------------------- forcing
def test_fine_pattern_counts_and_spreads():
    for grid, r in [((7, 7), 0.5), ((16, 16), 0.5), ((2, 3), 1 / 3), ((4, 6), 0.25), ((3, 3), 0)]:
        p = MSViT.fine_pattern(grid, r)
        n = grid[0] * grid[1]
        assert p.shape == grid and set(p.unique().tolist()) <= {0., 1.}
        assert p.sum().item() == round(r * n)
    p = MSViT.fine_pattern((4, 6), 0.5).flatten()
    assert p.tolist() == [0., 1.] * 12  # every other region in raster order
    assert MSViT.fine_pattern((3, 3), 1.0).sum().item() == 9
    # the shared evenly spaced rule: round(0.3 * 7) = 2 of 7 regions, at 3 and 6
    assert MSViT.fine_pattern((1, 7), 0.3).flatten().nonzero().flatten().tolist() == [3, 6]
    assert MSViT.fine_pattern((1, 7), 0.3).flatten().bool().tolist() == \
        evenly_spaced(7, 2 / 7).tolist()


@pytest.mark.parametrize('ratio', [0.0, 0.25, 0.5, 5 / 6, 1.0])
def test_force_fine_gives_requested_ratio_and_flops(ratio):
    """The deterministic forcing option (benchmarks: half the regions coarse) ignores the
    gate's decisions (the gate still runs and is counted) and the FLOPs follow the tokens."""
    m = mixed_model(decision_override=dict(fine_ratio=ratio))
    x = torch.randn(3, 3, 64, 96)  # 2x3 coarse grid
    with torch.no_grad():
        out = m(x)[0]
    k = round(ratio * 6)
    fine = m.last_maps['fine']
    assert torch.equal(fine, MSViT.fine_pattern((2, 3), ratio).expand(3, 2, 3))
    assert m.last_stats['num_fine_regions'].tolist() == [k] * 3
    torch.testing.assert_close(m.last_stats['fine_ratio'], torch.full((3, ), k / 6))
    n = 1 + (6 - k) + 4 * k
    assert m.last_stats['num_tokens'].tolist() == [n] * 3
    assert m.last_flops.tolist() == [m.dynamic_flops((64, 96), n)] * 3
    s = m.flops_summary((64, 96), fine_ratio=k / 6)
    assert (s['num_tokens'], s['dynamic']) == (n, m.last_flops[0].item())
    if ratio in (0.0, 1.0):
        # all coarse / all fine: the same outputs as a gate that decides so
        free = mixed_model()
        set_gate(free, fine=bool(ratio))
        with torch.no_grad():
            torch.testing.assert_close(out, free(x)[0], atol=1e-6, rtol=0)


def test_force_fine_flops_drop_with_the_ratio_full_size():
    with torch.device('meta'):
        vit_s = MSViT(arch='vit-s')
        seg_s = MSViT(arch='vit-s', img_size=512)
    # ViT-S at 224: 24 of 49 regions fine -> 1 + 25 + 96 = 122 tokens instead of 197
    for m, shape, regions, tokens, ratio in [(vit_s, (224, 224), 49, 122, 0.613),
                                            (seg_s, (512, 512), 256, 641, 0.563)]:
        k = MSViT.fine_pattern(m.grids(shape)[1], 0.5).sum().item()
        s = m.flops_summary(shape, fine_ratio=k / regions)
        assert s['num_tokens'] == tokens
        assert s['dynamic'] / s['static'] == pytest.approx(ratio, abs=1e-3)
        full = m.flops_summary(shape, fine_ratio=1.0)
        assert s['dynamic'] < full['dynamic'] and full['dynamic'] > s['static']


def test_force_fine_map_training_and_errors():
    m = mixed_model(gate_loss='l0')
    fmap = torch.tensor([[1., 0., 0.], [0., 1., 1.]])
    m.set_decision_override(dict(fine_map=fmap))
    m.train()
    x = torch.randn(2, 3, 64, 96)
    out = m(x)[0]
    assert torch.equal(m.last_maps['fine'], fmap.expand(2, 2, 3))
    assert m.aux_losses == {}  # forced: no gate loss
    out.square().mean().backward()
    assert all(p.grad is None for p in m.tokenizer.parameters())  # the gate gets nothing
    m.set_decision_override(dict(fine_map=torch.ones(3, 3)))
    with pytest.raises(ValueError, match='does not fit'):
        m(x)
    with pytest.raises(ValueError, match='fine_ratio must be in'):
        MSViT(arch=ARCH, img_size=64, decision_override=dict(fine_ratio=1.5))
    with pytest.raises(ValueError, match='not both'):
        m.set_decision_override(dict(fine_ratio=0.5, fine_map=fmap))
    with pytest.raises(ValueError, match=r'force_fine= was removed; use '
                                         r'decision_override=dict\(fine_ratio='):
        MSViT(arch=ARCH, img_size=64, force_fine=0.5)


def test_override_context_restores_learned_decisions():
    """``override_decisions`` gives the outputs of the constructor's override; after the
    block the gate decides again (outputs equal to a forward before entering)."""
    m = mixed_model()
    forced = mixed_model(decision_override=dict(fine_ratio=0.5))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before, ref = m(x)[0], forced(x)[0]
        with override_decisions(m, fine_ratio=0.5):
            out = m(x)[0]
            assert torch.equal(m.last_flops, forced.last_flops)
        after = m(x)[0]
    assert torch.equal(out, ref) and not torch.equal(before, ref)
    assert torch.equal(after, before) and m.decision_override is None


def test_realised_flops_match_ops_that_ran():
    """The realised FLOPs against a count of the ops that actually ran (torch's
    ``FlopCounterMode`` on the explicit-attention path), for one image with half of its regions
    coarse. Our FLOPs are multiply-adds, the counter counts 2 per multiply-add. Covered: the
    fine and coarse patch-embedding convolutions, the gate's linears, every
    linear of the blocks and the attention matmuls on the tokens that ran. Counted by neither:
    the bilinear downsampling of the image for the coarse tokens, the position-table resizes,
    norms, activations, softmax and biases."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmdyn.models.layers.attention import explicit_attention
    m = mixed_model()
    x = torch.randn(1, 3, 64, 96)  # the global generator, seeded by mixed_model
    with explicit_attention(m), FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    k = int(m.last_maps['fine'].sum())
    assert 0 < k < 6  # real mixing: some regions coarse (fewer tokens), some fine
    assert m.last_stats['num_tokens'].item() == 1 + (6 - k) + 4 * k
    assert fc.get_total_flops() == 2 * m.last_flops.item()
