"""DoViTEncoderDecoder with mmseg's SETR (naive / PUP / MLA) and Segmenter heads: xi = 1 equals the
static ViT segmentor, Eq. 10 auxiliary losses, Eq. 11 distillation, the distillation hook with a
frozen teacher from a config and a checkpoint, batch independence."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmdyn.engine.hooks import SelfDistillationHook
from mmdyn.models.losses import PixelKLDistillLoss
from mmdyn.models.segmentors import DoViTEncoderDecoder

ARCH = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2)
K = 5
IMG = 64
BN = dict(type='BN', requires_grad=True)

HEADS = {
    'naive': dict(decode_head=dict(type='SETRUPHead', in_channels=32, channels=16, in_index=-1,
                                   num_classes=K, num_convs=1, up_scale=4, kernel_size=1,
                                   norm_cfg=BN)),
    'pup': dict(decode_head=dict(type='SETRUPHead', in_channels=32, channels=16, in_index=-1,
                                 num_classes=K, num_convs=4, up_scale=2, kernel_size=3,
                                 norm_cfg=BN)),
    'mla': dict(neck=dict(type='MLANeck', in_channels=[32] * 4, out_channels=16, norm_cfg=BN,
                          act_cfg=dict(type='ReLU')),
                decode_head=dict(type='SETRMLAHead', in_channels=(16, ) * 4, channels=16,
                                 in_index=(0, 1, 2, 3), mla_channels=4, num_classes=K,
                                 norm_cfg=BN)),
    'segmenter': dict(decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=32,
                                       channels=32, embed_dims=32, num_heads=2, num_layers=1,
                                       num_classes=K)),
}


def _cfg(head, dynamic=True, threshold=1.0, **seg_kw):
    bb = dict(type='mmdyn.ViT', arch=ARCH, img_size=IMG,
              out_indices=(0, 1, 2, 3) if head == 'mla' else (3, ))
    cfg = dict(type='EncoderDecoder',
               data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3,
                                      std=[127.5] * 3, size=(IMG, IMG)),
               backbone=bb, train_cfg=dict(), test_cfg=dict(mode='whole'),
               **copy.deepcopy(HEADS[head]))
    if dynamic:
        cfg['type'] = 'mmdyn.DoViTEncoderDecoder'
        bb.update(type='mmdyn.DoViT', num_classes=K, decision_layers=(1, 2),
                  threshold=threshold)
        cfg.update(seg_kw)
    return ConfigDict(cfg)


def _build(cfg, seed=0):
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    m = revert_sync_batchnorm(MODELS.build(cfg))
    m.init_weights()
    return m


def safe_threshold(conf):
    """Midpoint of the widest gap between sorted confidences in their middle half."""
    c = conf.flatten().sort().values.double()
    lo, hi = len(c) // 4, 3 * len(c) // 4
    j = lo + int((c[lo + 1:hi + 1] - c[lo:hi]).argmax())
    return float((c[j] + c[j + 1]) / 2)


def _samples(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.randint(0, K, (1, IMG, IMG), generator=g)
        label[:, :4] = 255  # some ignored pixels
        out.append(SegDataSample(gt_sem_seg=PixelData(data=label),
                                 metainfo=dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG),
                                               pad_shape=(IMG, IMG))))
    return out


def _pair(head):
    dyn = _build(_cfg(head))
    static = _build(_cfg(head, dynamic=False), seed=1)
    missing, unexpected = static.load_state_dict(dyn.state_dict(), strict=False)
    assert not missing and all(k.startswith('backbone.aux_heads') for k in unexpected)
    return dyn.eval(), static.eval()


@pytest.mark.parametrize('head', ['naive', 'pup', 'mla', 'segmenter'])
def test_xi_one_equals_static_segmentor(head):
    dyn, static = _pair(head)
    assert isinstance(dyn, DoViTEncoderDecoder)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        a = dyn(x, mode='tensor')
        b = static(x, mode='tensor')
        pa = dyn.predict(x, _samples(2))
        pb = static.predict(x, _samples(2))
    assert a.shape == b.shape and a.shape[:2] == (2, K)
    assert torch.allclose(a, b, atol=1e-5)
    for s, t in zip(pa, pb):
        assert torch.allclose(s.seg_logits.data, t.seg_logits.data, atol=1e-5)
    assert torch.equal(dyn.backbone.last_stats['kept_ratio'], torch.ones(2))


@pytest.mark.parametrize('head', ['pup', 'segmenter'])
def test_losses_eq10_and_gradients(head):
    """Each auxiliary head's own mmseg loss: CE of the logits bilinearly resized to the label,
    weight 0.4 (the authors' heads), averaged over all pixels with the ignored ones counted
    as 0 (mmseg's CrossEntropyLoss, avg_non_ignore=False, as in the authors' mmseg 0.x), times
    alpha = 0.5 here."""
    m = _build(_cfg(head, threshold=0.3, aux_loss_weight=0.5)).train()
    x, samples = torch.randn(2, 3, IMG, IMG), _samples(2)
    losses = m.loss(x, samples)
    assert {'decode.loss_ce', 'dovit_aux_0.loss_ce', 'dovit_aux_1.loss_ce'} <= set(losses)
    assert not any(k.startswith('distill') for k in losses)  # no hook, no targets
    label = torch.stack([s.gt_sem_seg.data for s in samples]).squeeze(1)
    assert (label == 255).any()
    for k, lg in enumerate(m.backbone.aux_logits):
        up = F.interpolate(lg, size=(IMG, IMG), mode='bilinear', align_corners=False)
        ce = F.cross_entropy(up, label, ignore_index=255, reduction='sum') / label.numel()
        assert torch.allclose(losses[f'dovit_aux_{k}.loss_ce'], 0.5 * 0.4 * ce)
    losses['dovit_aux_1.loss_ce'].backward()
    assert m.backbone.aux_heads[1].conv_seg.weight.grad.abs().sum() > 0
    assert m.backbone.blocks[0].attn.q.weight.grad.abs().sum() > 0
    assert m.backbone.aux_heads[0].conv_seg.weight.grad is None or \
        m.backbone.aux_heads[0].conv_seg.weight.grad.abs().sum() == 0


def test_feature_distillation_mse():
    """The authors' distiller: pixel KL (weight 1.0) plus 0.5 * MSE between the last backbone
    feature maps, from targets ``{'outputs': logits, 'features': {'backbone': feats}}``."""
    m = _build(_cfg('pup', threshold=0.3)).eval()
    x, samples = torch.randn(2, 3, IMG, IMG), _samples(2)
    with torch.no_grad():
        feats = m.backbone(x)
        student = m.decode_head(feats)
    t_logits = torch.randn(student.shape)
    t_feat = torch.randn(feats[-1].shape)
    m.distill_targets = {'outputs': t_logits, 'features': {'backbone': (t_feat, )}}
    losses = m.loss(x, samples)
    p_t = t_logits.softmax(1)
    kl = (p_t * (p_t.log() - student.log_softmax(1))).sum(1).mean()
    assert torch.allclose(losses['distill.loss_distill'], kl, atol=1e-5)
    mse = ((feats[-1] - t_feat) ** 2).sum() / feats[-1].numel()
    assert torch.allclose(losses['distill.loss_feat'], 0.5 * mse, atol=1e-5)
    m.feat_distill_weight = None
    assert 'distill.loss_feat' not in m.loss(x, samples)


def test_distillation_eq11():
    m = _build(_cfg('pup', threshold=0.3)).eval()  # no dropout: the same logits twice
    x, samples = torch.randn(2, 3, IMG, IMG), _samples(2)
    with torch.no_grad():
        shape = m(x, mode='tensor').shape
    teacher = torch.randn(shape)
    m.distill_targets = teacher
    losses = m.loss(x, samples)
    with torch.no_grad():
        student = m.decode_head(m.extract_feat(x))
    expect = PixelKLDistillLoss(loss_weight=1.0)(student, teacher)
    assert torch.allclose(losses['distill.loss_distill'], expect, atol=1e-6)
    # a teacher at another resolution is resized (bilinear, corners not aligned) to the
    # student's logits: KL(teacher || student) written out on the resized teacher
    small = F.interpolate(teacher, size=(8, 8), mode='bilinear')
    m.distill_targets = small
    assert shape[-1] != 8
    p_t = F.interpolate(small, size=shape[-2:], mode='bilinear', align_corners=False).softmax(1)
    kl = (p_t * (p_t.log() - student.log_softmax(1))).sum(1).mean()
    got = m.loss(x, samples)['distill.loss_distill']
    assert torch.allclose(got, kl, atol=1e-6) and kl > 1e-3
    assert not torch.allclose(got, expect, atol=1e-3)  # not the full-size teacher's value
    # a teacher equal to the student gives zero
    m.distill_targets = student
    assert m.loss(x, samples)['distill.loss_distill'].abs() < 1e-6
    m.distill_loss = None
    assert 'distill.loss_distill' not in m.loss(x, samples)


class _Runner:

    def __init__(self, model):
        self.model = model
        self.optim_wrapper = None


def test_distill_hook_with_static_teacher_from_config_and_checkpoint(tmp_path):
    """The hook builds the frozen static segmentor from its config and checkpoint; with the
    student's weights and xi = 1 the student matches it and the KL term is zero; with stopped
    tokens it is positive."""
    student = _build(_cfg('naive', threshold=1.0)).train()
    with torch.no_grad():  # confident, varied logits so that stopped tokens show in the KL
        student.decode_head.conv_seg.weight.normal_(0, 1.)
    static = _build(_cfg('naive', dynamic=False), seed=3)
    static.load_state_dict(student.state_dict(), strict=False)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': static.state_dict()}, ckpt)
    hook = SelfDistillationHook(teacher_cfg=_cfg('naive', dynamic=False),
                                teacher_checkpoint=str(ckpt), strict=True)
    runner = _Runner(student)
    hook.before_run(runner)
    hook.before_train(runner)
    assert not hook.teacher.training
    assert all(not p.requires_grad for p in hook.teacher.parameters())
    data = dict(inputs=[torch.randint(0, 255, (3, IMG, IMG), dtype=torch.uint8)
                        for _ in range(2)], data_samples=_samples(2))
    student.eval()  # BN in eval so that student and teacher agree exactly
    hook.before_train_iter(runner, 0, data)
    assert student.distill_targets.shape == (2, K, 16, 16)
    pre = student.data_preprocessor(data, True)
    losses = student.loss(pre['inputs'], pre['data_samples'])
    assert losses['distill.loss_distill'].abs() < 1e-6
    student.backbone.threshold = 0.0  # everything stops at the first decision
    losses = student.loss(pre['inputs'], pre['data_samples'])
    assert losses['distill.loss_distill'] > 1e-6
    hook.after_train_iter(runner, 0, data)
    assert student.distill_targets is None


def test_image_alone_equals_in_batch_through_the_segmentor():
    m = _build(_cfg('segmenter', threshold=1.0)).eval()
    x = torch.randn(4, 3, IMG, IMG)
    with torch.no_grad():
        m(x, mode='tensor')
        conf = m.backbone.last_confidences[0]
        m.backbone.threshold = safe_threshold(conf)
        batch = m(x, mode='tensor')
        counts = m.backbone.last_block_tokens.clone()
        assert len(set(counts[:, -1].tolist())) > 1
        for b in range(4):
            alone = m(x[b:b + 1], mode='tensor')
            assert torch.allclose(batch[b:b + 1], alone, atol=1e-5)


@pytest.mark.parametrize('head', ['pup', 'segmenter'])
def test_everything_stopped_at_first_decision_through_the_segmentor(head):
    """xi = 0: every patch token stops after block 1, only the class token runs blocks 2-4; the
    decode head gets the block-1 features (final-normed in the Segmenter host), prediction and
    the training losses still work."""
    m = _build(_cfg(head, threshold=0.0)).eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        logits = m(x, mode='tensor')
        feats, hw = m.backbone.embed(x)
        feats = m.backbone.blocks[0](feats, hw)
        feats = m.backbone.norm(feats)
        ref = m.decode_head.forward([m.backbone.format_output(feats, hw)])
        preds = m.predict(x, _samples(2))
    assert m.backbone.last_block_tokens.tolist() == [[17, 1, 1, 1]] * 2
    assert torch.allclose(logits, ref, atol=1e-5)
    assert preds[0].pred_sem_seg.data.shape == (1, IMG, IMG)
    m.train()
    losses = m.loss(x, _samples(2))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert m.backbone.aux_heads[0].conv_seg.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match='aux_loss_weight'):
        _build(_cfg('naive', aux_loss_weight=-1.0))
    with pytest.raises(ValueError, match='PixelKLDistillLoss'):
        _build(_cfg('naive', distill_loss=dict(type='MSELoss')))


# ----------------------------------------------------------------------------- converters
def _mmseg_vit_segmentor(head):
    """A static segmentor with mmseg's own VisionTransformer (mmseg checkpoint layout)."""
    cfg = _cfg(head, dynamic=False)
    cfg.backbone = dict(type='VisionTransformer', img_size=IMG, patch_size=16, embed_dims=32,
                        num_layers=4, num_heads=2, mlp_ratio=2, out_indices=(3, ),
                        final_norm=True, with_cls_token=True, interpolate_mode='bicubic',
                        norm_cfg=dict(type='LN', eps=1e-6))
    m = _build(cfg, seed=5)
    with torch.no_grad():  # non-trivial cls token / position embedding
        m.backbone.cls_token.normal_(0, 0.5)
        m.backbone.pos_embed.normal_(0, 0.5)
    return m.eval()


@pytest.mark.parametrize('head', ['naive', 'segmenter'])
def test_convert_mmseg_segmentor_checkpoint(head, tmp_path):
    from mmdyn.models.segmentors.dovit_segmentor import load_segmentor_checkpoint
    ref = _mmseg_vit_segmentor(head)
    ckpt = tmp_path / 'mmseg_segmentor.pth'
    torch.save({'meta': {}, 'state_dict': ref.state_dict()}, ckpt)
    cfg = _cfg(head, threshold=1.0)
    cfg.backbone.update(final_norm=True, patch_bias=False)  # mmseg ViT's defaults
    dyn = _build(cfg, seed=9).eval()
    missing, unexpected = load_segmentor_checkpoint(dyn, str(ckpt))
    assert not unexpected
    # (torch does not report a BatchNorm's missing num_batches_tracked)
    assert sorted(missing) == sorted(k for k in dyn.state_dict() if '.aux_heads.' in k
                                     and not k.endswith('num_batches_tracked'))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.allclose(dyn(x, mode='tensor'), ref(x, mode='tensor'), atol=1e-5)


def test_dovit_loads_timm_layout_backbone_checkpoint(tmp_path):
    """A timm/DeiT-layout ViT checkpoint (fused qkv, ``mlp.*``, ``patch_embed.proj``) written
    from a static mmdyn ViT initialises DoViT through ``init_cfg``; xi = 1 then equals it."""
    from mmdyn.models.backbones import DoViT, ViT
    torch.manual_seed(2)
    vit = ViT(arch=ARCH, img_size=IMG)
    vit.init_weights()
    timm = {}
    for k, v in vit.state_dict().items():
        if '.attn.q.' in k:
            kv = vit.state_dict()[k.replace('.attn.q.', '.attn.kv.')]
            timm[k.replace('.attn.q.', '.attn.qkv.')] = torch.cat([v, kv], 0)
        elif '.attn.kv.' in k:
            continue
        else:
            timm[k.replace('.ffn.', '.mlp.').replace('patch_embed.projection.',
                                                     'patch_embed.proj.')] = v
    timm['head.weight'] = torch.randn(10, 32)  # a classifier head is ignored
    ckpt = tmp_path / 'timm_vit.pth'
    torch.save(timm, ckpt)
    d = DoViT(arch=ARCH, num_classes=K, decision_layers=(1, 2), threshold=1.0, img_size=IMG,
              init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    d.init_weights()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.allclose(d.eval()(x)[0], vit.eval()(x)[0], atol=1e-5)


# ------------------------------------------------- checkpoints of the authors' DoViT code
_OFFICIAL_BLOCK_NAMES = (('norm1.', 'ln1.'), ('norm2.', 'ln2.'), ('attn.proj.', 'attn.proj.'),
                         ('ffn.fc1.', 'ffn.layers.0.0.'), ('ffn.fc2.', 'ffn.layers.1.'))


def _official_layout(model):
    """The state dict of the authors' ``DoEncoderDecoder`` for the weights of a (tiny) mmdyn
    DoViT segmentor, written key by key from their module names: mmseg-0.x-style
    ``layers.<i>`` blocks with ``ln1`` / ``ln2``, a fused timm-style ``attn.qkv`` and
    ``attn.proj``, ``ffn.layers.0.0`` / ``ffn.layers.1``, the final norm ``ln1`` and the
    auxiliary heads on the backbone as ``auxiliary_head.<k>``."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k.startswith('backbone.blocks.'):
            i, rest = k[len('backbone.blocks.'):].split('.', 1)
            pre = f'backbone.layers.{i}.'
            if rest.startswith('attn.q.'):
                kv = sd[k.replace('.attn.q.', '.attn.kv.')]
                out[pre + 'attn.qkv.' + rest[len('attn.q.'):]] = torch.cat([v, kv], 0)
            elif not rest.startswith('attn.kv.'):
                (ours, theirs), = [p for p in _OFFICIAL_BLOCK_NAMES if rest.startswith(p[0])]
                out[pre + theirs + rest[len(ours):]] = v
        elif k.startswith('backbone.norm.'):
            out['backbone.ln1.' + k[len('backbone.norm.'):]] = v
        elif k.startswith('backbone.aux_heads.'):
            out['backbone.auxiliary_head.' + k[len('backbone.aux_heads.'):]] = v
        else:
            out[k] = v
    return out


@pytest.mark.parametrize('layout', ['encoder_decoder', 'distiller'])
def test_convert_official_dovit_checkpoint(layout, tmp_path):
    """A checkpoint in the authors' layout (their segmentor, or their distiller: student under
    ``student.``, plus ``teacher.*`` and the unused ``generation.*``) converts whole: strict
    loading, the same logits and decisions as the model it was written from."""
    from mmdyn.models.segmentors.dovit_segmentor import load_segmentor_checkpoint
    import importlib.util
    import os.path as osp
    spec = importlib.util.spec_from_file_location('dovit2mmdyn', osp.join(
        osp.dirname(__file__), '..', '..', '..', 'tools', 'model_converters', 'dovit2mmdyn.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    convert = tool.main
    cfg = _cfg('segmenter', threshold=0.5)
    cfg.backbone.update(final_norm=True)
    src = _build(cfg, seed=4).eval()
    official = _official_layout(src)
    # the auxiliary heads are the authors' FCN heads: these are their keys
    assert sorted(k for k in official if 'auxiliary_head.1.' in k) == sorted(
        'backbone.auxiliary_head.1.' + n for n in (
            'convs.0.conv.weight', 'convs.0.bn.weight', 'convs.0.bn.bias',
            'convs.0.bn.running_mean', 'convs.0.bn.running_var',
            'convs.0.bn.num_batches_tracked', 'conv_seg.weight', 'conv_seg.bias'))
    if layout == 'distiller':
        official = dict({'student.' + k: v for k, v in official.items()},
                        **{'teacher.' + k: v for k, v in official.items()},
                        **{'generation.0.weight': torch.randn(4, 4, 3, 3)})
    path = tmp_path / 'official.pth'
    torch.save({'meta': {}, 'state_dict': official}, path)
    out = tmp_path / 'converted.pth'
    convert([str(path), str(out)])
    dst = _build(cfg, seed=8).eval()
    assert load_segmentor_checkpoint(dst, str(out), strict=True) == ([], [])
    # (the original file loads directly too)
    assert load_segmentor_checkpoint(_build(cfg, seed=8), str(path), strict=True) == ([], [])
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        a = src(x, mode='tensor')
        ka = src.backbone.last_block_tokens.clone()
        b = dst(x, mode='tensor')
    assert torch.equal(dst.backbone.last_block_tokens, ka)
    assert torch.allclose(a, b, atol=1e-6)


def test_official_conversion_refuses_other_layouts(tmp_path):
    from mmdyn.models.segmentors.dovit_segmentor import dovit_official_to_mmdyn
    with pytest.raises(ValueError, match='auxiliary_head'):
        dovit_official_to_mmdyn({'state_dict': {'backbone.layers.0.ln1.weight': torch.ones(2)}})
    cfg = _cfg('segmenter')
    m = _build(cfg)
    bad = _official_layout(m)
    bad['backbone.auxiliary_head.5.conv_seg.weight'] = torch.ones(1)
    path = tmp_path / 'bad.pth'
    torch.save(bad, path)
    from mmdyn.models.segmentors.dovit_segmentor import load_segmentor_checkpoint
    with pytest.raises(ValueError, match='does not fit the model: .*unexpected'):
        load_segmentor_checkpoint(m, str(path), strict=True)
