"""visualize_dynamic on a DoViT segmentor (the paper's Fig. 5): one panel per decision point for
the kept tokens (``keep_k``) and for the confidence levels (``conf_k``), checked pixel by pixel
against the backbone's own records."""
import copy
import importlib.util
import os.path as osp

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'visualize_dynamic.py')
CFG = osp.join(ROOT, 'configs', 'dovit',
               'setr_dovit-b_naive_8xb1-80k_cityscapes-768x768_keep0.5.py')
S = 64  # 4 x 4 patch tokens
CRIMSON = np.array([220, 20, 60])


def load_tool():
    spec = importlib.util.spec_from_file_location('visualize_dynamic_dovit', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_model():
    cfg = Config.fromfile(CFG)
    m = copy.deepcopy(cfg.model)
    m.backbone.update(arch=dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2),
                      img_size=(S, S), init_cfg=None, out_indices=(0, 1, 2, 3),
                      decision_layers=(1, 2), decision_override=dict(keep_ratios=(0.5, 0.25)))
    m.decode_head.update(in_channels=32, channels=16)
    m.data_preprocessor.size = (S, S)
    m.test_cfg = dict(mode='whole')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(m).eval()  # (constructor initialisation)


def test_dovit_keep_and_confidence_panels(tmp_path):
    tool = load_tool()
    from mmdyn.visualization import DynamicVisualizer
    from mmdyn.visualization.dynamic_visualizer import DEFAULT_PALETTE
    rgb = np.random.default_rng(0).integers(0, 256, (S, S, 3))
    img = rgb[..., ::-1].astype(np.uint8)  # BGR on disk
    path = str(tmp_path / 'scene.png')
    mmcv.imwrite(img, path)
    model = tiny_model()
    # scale the auxiliary heads (random weights) until both confidence maps of this image
    # spread over at least three levels, so that the panels show several colours
    data = dict(inputs=[torch.from_numpy(img.transpose(2, 0, 1).copy())], data_samples=None)
    x = model.data_preprocessor(data, False)['inputs']
    base = [h.conv_seg.weight.detach().clone() for h in model.backbone.aux_heads]
    for scale in (1., 2., 4., 8., 16., 32., 64., 128.):
        with torch.no_grad():
            for h, w in zip(model.backbone.aux_heads, base):
                h.conv_seg.weight.copy_(w * scale)
            model.backbone(x)
        levels = [model.backbone.confidence_levels(c).unique().numel()
                  for c in model.backbone.last_confidences]
        if min(levels) >= 3:
            break
    assert min(levels) >= 3
    vis = DynamicVisualizer(name='dovit_vis_test', draw_titles=False, ncols=4)
    out, = tool.visualize(model, [path], str(tmp_path / 'out'), visualizer=vis)
    bb = model.backbone
    # the panels are the backbone's decision maps of that image, in this order
    maps = tool.dynamic_maps(model)
    assert list(maps) == ['backbone/conf_0', 'backbone/keep_0', 'backbone/conf_1',
                          'backbone/keep_1']
    assert bb.last_maps['keep_0'].sum() == 8 and bb.last_maps['keep_1'].sum() == 4
    drawn = mmcv.imread(out, channel_order='rgb').astype(int)
    assert drawn.shape == (S, 4 * S, 3)
    up = lambda t: np.kron(t.cpu().numpy(), np.ones((16, 16), dtype=int))  # noqa: E731
    for p, key in enumerate(maps):
        panel = drawn[:, p * S:(p + 1) * S]
        kind, k = key.split('/')[1].split('_')
        if kind == 'keep':
            keep = up(bb.last_maps[f'keep_{k}'].long()[0])
            expect = np.where(keep[..., None] == 1, np.round(0.5 * rgb + 0.5 * CRIMSON), rgb)
        else:
            lv = up(bb.confidence_levels(bb.last_confidences[int(k)])[0])
            assert len(np.unique(lv)) >= 3  # several levels: one colour each
            pal = np.array(DEFAULT_PALETTE)
            expect = np.round(0.5 * rgb + 0.5 * pal[lv % len(pal)])
        assert np.abs(panel - expect).max() <= 1, key
