"""mmdyn.DecisionMapHook (``tools/test.py --show-dynamic``): one PNG per test image, the maps of
each image of a batch on its own panel, and no drawing (one warning) where the maps cannot
cover the image (sliding windows)."""
import os.path as osp
import types

import numpy as np
import pytest
import torch

import mmdyn  # noqa: F401
from mmdyn.engine.hooks import DecisionMapHook
from mmdyn.registry import HOOKS

QUICKSTART = 'configs/_quickstart_/fpn_dge-pvt-tiny_1xb8-300iter_toy-ade20k-128x128.py'

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def seg_model(repo_root):
    from mmdyn.analysis.complexity import build_model_from_cfg, load_config
    torch.manual_seed(0)
    return build_model_from_cfg(load_config(osp.join(repo_root, QUICKSTART))).eval()


def batch(n, size=64, seed=0):
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    samples = [SegDataSample(metainfo=dict(img_path=f'/data/img{i % 2}.jpg', ori_shape=(size,
                                                                                         size),
                                           img_shape=(size, size)))
               for i in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def run_batches(hook, model, batches):
    runner = types.SimpleNamespace(model=model)
    hook.before_test(runner)
    for i, data in enumerate(batches):
        hook.before_test_iter(runner, i, data)
        with torch.no_grad():
            outputs = model.test_step(data)
        hook.after_test_iter(runner, i, data, outputs)
    hook.after_test(runner)


def test_each_image_its_own_maps(tmp_path, seg_model):
    """A batch of 3: three PNGs (a repeated name gets a suffix); each equals what the hook
    draws for that image alone, so no image is drawn with another's decisions."""
    hook = HOOKS.build(dict(type='mmdyn.DecisionMapHook', out_dir=str(tmp_path / 'b3')))
    data = batch(3)
    run_batches(hook, seg_model, [data])
    assert [osp.basename(p) for p in hook.written] == ['img0.png', 'img1.png', 'img0_1.png']
    import mmcv
    for i, path in enumerate(hook.written):
        one = DecisionMapHook(out_dir=str(tmp_path / f'one{i}'))
        single = dict(inputs=[data['inputs'][i]], data_samples=[data['data_samples'][i]])
        run_batches(one, seg_model, [single])
        assert (mmcv.imread(path) == mmcv.imread(one.written[0])).all(), path
    # the three images' maps differ (else the check above could not tell them apart)
    drawn = [mmcv.imread(p) for p in hook.written]
    assert not (drawn[0] == drawn[1]).all() and not (drawn[0] == drawn[2]).all()
    # one 64x64 panel per decision point (the tiny DGE's four stages), four per row
    assert drawn[0].shape[:2] == (64, 4 * 64)
    # the batch image (BGR, as mmcv loads it) is drawn as RGB
    img = data['inputs'][0]
    rgb = hook._image(img)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert (rgb == img.numpy().transpose(1, 2, 0)[..., ::-1]).all()
    assert (DecisionMapHook(out_dir=str(tmp_path), channel_order='rgb')._image(img) ==
            img.numpy().transpose(1, 2, 0)).all()

def test_sliding_windows_draw_nothing_and_warn(tmp_path, seg_model):
    from mmengine.config import ConfigDict
    seg_model.test_cfg = ConfigDict(mode='slide', crop_size=(32, 32), stride=(32, 32))
    try:
        hook = DecisionMapHook(out_dir=str(tmp_path))
        with pytest.warns(UserWarning, match='ran 4 times in one forward'):
            run_batches(hook, seg_model, [batch(1)])
        assert hook.written == [] and not list(tmp_path.iterdir())
    finally:
        seg_model.test_cfg = ConfigDict(mode='whole')


def test_bad_arguments_and_static_models(tmp_path):
    for kw, msg in ((dict(interval=0), 'interval'), (dict(channel_order='rgba'), 'channel_order'),
                    (dict(alpha=2), 'alpha')):
        with pytest.raises(ValueError, match=msg):
            DecisionMapHook(out_dir=str(tmp_path), **kw)
    hook = DecisionMapHook(out_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match='no dynamic module'):
        hook.before_test(types.SimpleNamespace(model=torch.nn.Linear(2, 2)))


def test_every_rank_draws_its_images(tmp_path, seg_model, monkeypatch):
    """In a distributed test every rank draws its own images (was: mmengine's Visualizer draws
    on the main process only, so ranks > 0 crashed on a None image and took the test down)."""
    import mmengine.dist.utils as dist_utils
    main = DecisionMapHook(out_dir=str(tmp_path / 'rank0'))
    run_batches(main, seg_model, [batch(1)])
    monkeypatch.setattr(dist_utils, 'is_main_process', lambda *a, **k: False)
    other = DecisionMapHook(out_dir=str(tmp_path / 'rank1'))
    run_batches(other, seg_model, [batch(1)])
    import mmcv
    assert len(other.written) == 1
    assert (mmcv.imread(other.written[0]) == mmcv.imread(main.written[0])).all()
