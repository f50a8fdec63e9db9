import importlib.util
import os.path as osp
import textwrap

import mmcv
import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'visualize_dynamic.py')

# A tiny fake dynamic model, written as a module that the config imports (custom_imports).
FAKE_MODULE = '''
import torch
import torch.nn as nn
from mmcv.transforms import BaseTransform
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from mmdyn.models.utils.dynamic import DynamicModuleMixin
from mmdyn.registry import MODELS, TRANSFORMS


class CheckerBackbone(DynamicModuleMixin, nn.Module):
    """Records a checkerboard 'keep' map (stride 8) and a 3-way 'scale' choice (stride 16)."""

    def __init__(self):
        super().__init__()
        self.reset_dynamic_records()

    def forward(self, x):
        b, _, h, w = x.shape
        i = torch.arange(h // 8)[:, None]
        j = torch.arange(w // 8)[None, :]
        keep = ((i + j) % 2).expand(b, -1, -1)
        if self.decision_override is not None:  # every token kept
            keep = torch.ones_like(keep)
        scale = (torch.arange(w // 16)[None, :] % 3).expand(b, h // 16, -1)
        self.record_dynamic(flops=torch.ones(b), maps=dict(keep=keep, scale=scale))
        return x.mean((1, 2, 3))

    OVERRIDE_KEYS = ('keep_all', )

    def _set_decision_override(self, spec):
        return spec


@MODELS.register_module(force=True)
class FakeDynModel(BaseModel):

    def __init__(self):
        super().__init__(data_preprocessor=dict(type='ImgDataPreprocessor',
                                                pad_size_divisor=16))
        self.backbone = CheckerBackbone()

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.backbone(inputs)
        return data_samples if mode == 'predict' else out


@TRANSFORMS.register_module(force=True)
class FakePack(BaseTransform):

    def transform(self, results):
        img = results['img']
        return dict(inputs=torch.from_numpy(img.transpose(2, 0, 1).copy()),
                    data_samples=BaseDataElement(metainfo=dict(img_shape=img.shape[:2])))
'''

CONFIG = '''
default_scope = 'mmdyn'
custom_imports = dict(imports=['fake_dyn_vis_module'], allow_failed_imports=False)
model = dict(type='FakeDynModel')
{pipeline}
'''

PIPELINE = '''
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(56, 40)),
    dict(type='FakePack'),
]))
'''

BG = np.array([100, 50, 200])  # RGB background
CRIMSON = np.array([220, 20, 60])
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44)])


def load_tool():
    spec = importlib.util.spec_from_file_location('visualize_dynamic_tool', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / 'fake_dyn_vis_module.py').write_text(FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, size, pipeline):
        img = np.empty((size[0], size[1], 3), np.uint8)
        img[...] = BG[::-1]  # BGR on disk
        path = str(tmp_path / name)
        mmcv.imwrite(img, path)
        cfg = tmp_path / f'cfg_{osp.splitext(name)[0]}.py'
        cfg.write_text(textwrap.dedent(CONFIG.format(pipeline=PIPELINE if pipeline else '')))
        return str(cfg), path

    return write


def expected_panels(h, w):
    """RGB of the two panels, by hand: tint 0.5 on the 1s of the checkerboard (stride 8 on the
    input padded to 48 x 64), and one colour per value of the scale choice (stride 16)."""
    y, x = np.mgrid[:h, :w]
    keep = ((y // 8) + (x // 8)) % 2
    p1 = np.where(keep[..., None] == 1, np.round(0.5 * BG + 0.5 * CRIMSON), BG)
    p2 = np.round(0.5 * BG + 0.5 * PALETTE[(x // 16) % 3])
    return p1, p2


def check_png(path, h, w, rows_from=0):
    out = mmcv.imread(path, channel_order='rgb').astype(int)
    assert out.shape == (h, 2 * w, 3)  # one row of two panels
    p1, p2 = expected_panels(h, w)
    # titles sit at the top-left: compare below them
    assert np.abs(out[rows_from:, :w] - p1[rows_from:]).max() <= 1
    assert np.abs(out[rows_from:, w:] - p2[rows_from:]).max() <= 1
    # where the mask is 1 the pixel is tinted; where it is 0 it is the image
    keep = (((np.mgrid[:h, :w][0] // 8) + (np.mgrid[:h, :w][1] // 8)) % 2)[rows_from:]
    region = out[rows_from:, :w]
    assert (np.abs(region[keep == 0] - BG).max(1) <= 1).all()
    assert (np.abs(region[keep == 1] - np.round(0.5 * BG + 0.5 * CRIMSON)).max(1) <= 1).all()


def test_with_config_pipeline(setup, tmp_path):
    # 70 x 100 image resized by the pipeline to 40 x 56, padded to 48 x 64 by the model
    cfg, img = setup('scene.png', (70, 100), pipeline=True)
    out_dir = tmp_path / 'out'
    written = load_tool().main([cfg, img, img, '--out', str(out_dir), '--device', 'cpu'])
    assert [osp.basename(f) for f in written] == ['scene.png', 'scene_1.png']
    check_png(written[0], 40, 56, rows_from=20)


def test_without_pipeline_no_titles(setup, tmp_path):
    cfg, img = setup('plain.png', (40, 56), pipeline=False)
    out_dir = tmp_path / 'out'
    written = load_tool().main(
        [cfg, img, '--out', str(out_dir), '--device', 'cpu', '--no-titles'])
    check_png(written[0], 40, 56, rows_from=0)


def test_override_draws_the_forced_decisions(setup, tmp_path):
    """``--override`` draws the decisions of a decision override (here: every token kept, the
    whole first panel tinted) and gives the model its own decisions back after."""
    import mmdyn.models.utils.dynamic as dynamic
    cfg, img = setup('plain.png', (40, 56), pipeline=False)
    seen = []
    real = dynamic.override_decisions

    def spy(model, **spec):
        seen.append((model.backbone, spec))
        return real(model, **spec)

    dynamic.override_decisions = spy
    try:
        written = load_tool().main([cfg, img, '--out', str(tmp_path / 'o'), '--device', 'cpu',
                                    '--no-titles', '--override', 'keep_all=1'])
    finally:
        dynamic.override_decisions = real
    out = mmcv.imread(written[0], channel_order='rgb').astype(int)
    assert np.abs(out[:, :56] - np.round(0.5 * BG + 0.5 * CRIMSON)).max() <= 1
    (bb, spec), = seen
    assert spec == dict(keep_all=1) and bb.decision_override is None


def test_override_needs_a_model_that_takes_one(setup, tmp_path, capsys, monkeypatch):
    cfg, img = setup('plain.png', (40, 56), pipeline=False)
    tool = load_tool()
    import mmdyn.models.utils.dynamic as dynamic
    monkeypatch.setattr(dynamic, 'takes_decision_override', lambda model: False)
    with pytest.raises(SystemExit):
        tool.main([cfg, img, '--out', str(tmp_path / 'o'), '--override', 'keep_all=1'])
    assert 'takes no decision override' in capsys.readouterr().err


def test_checkpoint_argument(setup, tmp_path):
    cfg, img = setup('a.png', (40, 56), pipeline=False)
    tool = load_tool()
    args = tool.parse_args([cfg, 'w.pth', img, '--out', 'x', '--cfg-options', 'model.k=1'])
    assert args.checkpoint == 'w.pth' and args.images == [img]
    assert args.cfg_options == {'model.k': 1}
    args = tool.parse_args([cfg, img, '--out', 'x'])
    assert args.checkpoint is None and args.images == [img]


def test_visualizer_registered_and_backend_output(tmp_path):
    from mmdyn.registry import VISUALIZERS
    from mmdyn.visualization import DynamicVisualizer
    vis = VISUALIZERS.build(dict(type='DynamicVisualizer', name='test_dyn_vis_registry',
                                 vis_backends=[dict(type='LocalVisBackend')],
                                 save_dir=str(tmp_path), draw_titles=False))
    assert isinstance(vis, DynamicVisualizer)
    image = np.zeros((16, 16, 3), np.uint8)
    image[...] = BG
    keep = np.zeros((16, 16), np.int64)
    keep[8:, :] = 1
    drawn = vis.add_datasample('img', image, maps=dict(keep=keep), step=3)
    assert drawn.shape == (16, 16, 3)
    assert np.abs(drawn[:8].astype(int) - BG).max() <= 1
    assert np.abs(drawn[8:].astype(int) - np.round(0.5 * BG + 0.5 * CRIMSON)).max() <= 1
    assert osp.exists(tmp_path / 'vis_data' / 'vis_image' / 'img_3.png')


def test_map_cells_sit_at_their_stride():
    """A map of an input its stride does not divide: cell ``j`` over pixels ``[16 j, 16 j +
    16)`` (a ViT's padded 70 x 82 input: 5 x 6 patches), not the map stretched over the input;
    a floor grid (PVT v1: 17 x 22 cells of 4 pixels on 70 x 90) leaves its uncovered margin
    at -1; the stride of a map with none declared is inferred for power-of-two grids."""
    from mmdyn.visualization.dynamic_visualizer import infer_map_stride, map_to_image
    rng = np.random.default_rng(0)
    m = rng.integers(0, 3, (5, 6))
    ys, xs = np.mgrid[:70, :82]
    got = map_to_image(m, (70, 82), stride=16)
    assert (got == m[ys // 16, xs // 16]).all()
    assert (map_to_image(m, (70, 82)) == got).all()  # inferred: 16
    assert (map_to_image(m, (70, 82), (50, 40), stride=16) == got[:50, :40]).all()
    f = rng.integers(0, 2, (17, 22))
    got = map_to_image(f, (70, 90), stride=4)
    ys, xs = np.mgrid[:68, :88]
    assert (got[:68, :88] == f[ys // 4, xs // 4]).all()
    assert (got[68:] == -1).all() and (got[:, 88:] == -1).all()
    assert infer_map_stride((17, 22), (70, 90)) == 4 and infer_map_stride((5, 6), (70, 82)) == 16
    assert infer_map_stride((4, 4), (64, 64)) is None and infer_map_stride((1, 1), (9, 9)) is None
    assert infer_map_stride((5, 3), (70, 85)) is None  # no power of two: stretched
    with pytest.raises(ValueError, match='stride must be an int >= 1'):
        map_to_image(m, (70, 82), stride=0)


def test_a_value_keeps_its_colour_whatever_else_the_map_holds():
    """A map of choices (``binary=False``) tints each value with its palette colour even when
    the image's map holds only 0s and 1s; a 0/1 map (``binary=True``) tints its 1s with the
    mask colour; negative cells (no token) stay untinted."""
    from mmdyn.visualization import DynamicVisualizer
    from mmdyn.visualization.dynamic_visualizer import DEFAULT_PALETTE
    vis = DynamicVisualizer(name='test_dyn_vis_colours', draw_titles=False)
    image = np.zeros((8, 8, 3), np.uint8)
    image[...] = BG
    tint = lambda c: np.round(0.5 * BG + 0.5 * np.array(c))  # noqa: E731
    for values in ((1, 1), (1, 2), (0, 1)):
        dmap = np.repeat(np.array(values), 32).reshape(8, 8)
        drawn = vis.draw_decision_map(image, dmap, binary=False).astype(int)
        for half, v in zip((drawn[:4], drawn[4:]), values):
            assert np.abs(half - tint(DEFAULT_PALETTE[v])).max() <= 1, (values, v)
    dmap = np.repeat(np.array([-1, 1]), 32).reshape(8, 8)
    drawn = vis.draw_decision_map(image, dmap, binary=True).astype(int)
    assert np.abs(drawn[:4] - BG).max() <= 1
    assert np.abs(drawn[4:] - tint(CRIMSON)).max() <= 1
