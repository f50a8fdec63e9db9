"""demo/image_demo.py on real photographs (scikit-image) with checkpoints of configs/_tiny_
written by tools/train.py: one segmentation (DGE), one detection (DiT) and one classification
(DVT, early exit) config."""
import importlib.util
import os.path as osp

import mmcv
import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photo(tmp_path_factory, name):
    from skimage import data
    path = str(tmp_path_factory.mktemp('photo') / f'{name}.png')
    mmcv.imwrite(np.ascontiguousarray(getattr(data, name)()[..., ::-1]), path)
    return path


# (config, data set fixture, photograph, network input (h, w) after the tiny test pipeline)
CASES = {
    # Resize (128, 64) keeping the ratio: 512 x 512 -> 64 x 64
    'seg': ('fpn_dge-pvt-tiny_toy-ade20k.py', 'toy_ade20k', 'astronaut', (64, 64)),
    # Resize (128, 96) keeping the ratio: 400 x 600 -> 85 x 128
    'det': ('retinanet_dit-tiny_toy-coco.py', 'toy_coco', 'coffee',
            tuple(reversed(mmcv.rescale_size((600, 400), (128, 96))))),
    # ResizeEdge 64 (short side) and CenterCrop 64
    'cls': ('dvt-tiny_toy-imagenet.py', 'toy_imagenet', 'chelsea', (64, 64)),
}


@pytest.fixture(scope='module', params=sorted(CASES))
def case(request, tmp_path_factory, train_tiny):
    name, data_fixture, photo, net_shape = CASES[request.param]
    cfg, ckpt = train_tiny(name, request.getfixturevalue(data_fixture))
    return request.param, cfg, ckpt, _photo(tmp_path_factory, photo), net_shape


def test_image_demo(case, tmp_path, capsys):
    codebase, cfg, ckpt, photo, (hn, wn) = case
    demo = _load('demo/image_demo.py', '_mmdyn_image_demo')
    tool = _load('tools/analysis_tools/visualize_dynamic.py', '_mmdyn_vis_tool')
    img = mmcv.imread(photo)
    h, w = img.shape[:2]

    plain_file = str(tmp_path / 'plain.png')
    res = demo.main([photo, cfg, ckpt, '--out-file', plain_file, '--score-thr', '0'])
    assert res['codebase'] == {'seg': 'mmseg', 'det': 'mmdet', 'cls': 'mmpretrain'}[codebase]
    plain = mmcv.imread(plain_file)
    assert plain.shape == (h, w, 3)
    # the prediction is drawn: label map overlay, boxes, or the class text
    assert np.abs(plain.astype(int) - img.astype(int)).max() > 50
    assert (plain != img).any(axis=2).mean() > (0.3 if codebase == 'seg' else 0.001)
    # the realised GFLOPs are printed: those recorded for this image
    rec = res['records']
    printed = capsys.readouterr().out
    assert f"realised GFLOPs: {rec['gflops']:.6g}" in printed
    assert rec['gflops'] > 0 and rec['flops'] <= rec['static_flops'] * 1.01

    dyn_file = str(tmp_path / 'dynamic.png')
    res = demo.main([photo, cfg, ckpt, '--out-file', dyn_file, '--score-thr', '0',
                     '--show-dynamic'])
    out = mmcv.imread(dyn_file)
    panels = len(tool.dynamic_maps(res['model']))
    assert panels >= 1
    # side by side: the prediction, then a grid of the decision points, 4 a row, each panel the
    # network input scaled to the height of a row, the grid as high as the photograph
    ncols = min(4, panels)
    panel_h = h // -(-panels // ncols)
    assert out.shape == (h, w + ncols * int(round(wn * panel_h / hn)), 3)
    np.testing.assert_array_equal(out[:, :w], plain)
    assert out[:, w:].mean() > 10  # the panels hold the (tinted) picture


def test_image_demo_cli_errors(run_tool, tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, osp.join(REPO, 'demo', 'image_demo.py'),
                        str(tmp_path / 'missing.png'),
                        osp.join(REPO, 'configs', '_tiny_', 'dvt-tiny_toy-imagenet.py'),
                        str(tmp_path / 'none.pth'), '--out-file', str(tmp_path / 'o.png')],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode != 0
    assert 'image' in r.stderr and 'does not exist' in r.stderr
