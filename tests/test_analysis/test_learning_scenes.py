"""The learning checks' 'detail' scenes: small objects whose class only a fine texture tells.

The accuracy-per-FLOP claim of the dynamic methods is about images whose detail is localised;
these checks make sure the generated data has that property (and that the default scenes are
unchanged), independently of any training.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdyn.analysis.learning.common import (DETAIL_OBJECTS, detail_pattern, detail_scene,
                                            scenes)
from mmdyn.datasets.toy import draw_scene


def test_detail_patterns_differ_at_full_size_and_vanish_down_sampled():
    pats = torch.stack([torch.from_numpy(detail_pattern(c, 32, 32, (0, 0))) for c in range(4)])
    assert torch.allclose(pats.mean((1, 2)), torch.full((4, ), 0.5), atol=0.02)
    # at full size every pair of classes differs on many pixels, whatever the phase
    for a in range(4):
        for b in range(a + 1, 4):
            other = torch.from_numpy(detail_pattern(b, 32, 32, (1, 3)))
            assert (pats[a] != other).float().mean() > 0.25, (a, b)
    # resized by 3/4 (the smaller inputs the static hosts get), all four are nearly flat
    small = F.interpolate(pats[:, None], scale_factor=0.75, mode='bilinear', antialias=True,
                          align_corners=False)[:, 0, 2:-2, 2:-2]
    assert (small - 0.5).abs().max() < 0.2, (small - 0.5).abs().amax((1, 2))
    assert (pats - 0.5).abs().min() == 0.5


def test_detail_scene_layout():
    rng = np.random.default_rng(0)
    img, instances = detail_scene(rng, (64, 64))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert DETAIL_OBJECTS[0] <= len(instances) <= DETAIL_OBJECTS[1]
    occupied = np.zeros((64, 64), int)
    for inst in instances:
        occupied += inst.mask
        assert 9 <= inst.mask.sum() < 0.05 * 64 * 64  # small objects
    assert occupied.max() == 1  # disjoint
    # the background is nearly flat: small differences between neighbouring pixels ...
    bg = ~occupied.astype(bool)
    f = img.astype(float)
    grad = np.maximum(np.abs(f[1:, :-1] - f[:-1, :-1]), np.abs(f[:-1, 1:] - f[:-1, :-1])).max(-1)
    assert np.median(grad[bg[1:, 1:] & bg[:-1, :-1]]) < 8
    # ... the objects are not (a two-tone texture 100 grey levels apart)
    inside = occupied.astype(bool)
    assert np.median(grad[inside[1:, 1:] & inside[:-1, :-1]]) > 40


def test_scenes_kinds():
    x, y = scenes(np.random.default_rng(1), 16, 48, kind='detail')
    assert x.shape == (16, 3, 48, 48) and y.shape == (16, 48, 48)
    assert x.min() >= -1 and x.max() <= 1
    assert set(y.unique().tolist()) <= set(range(5)) and len(y.unique()) >= 4
    assert (y > 0).float().mean() < 0.15  # most of the image is background
    # the default kind is the toy datasets' generator, unchanged
    x0, y0 = scenes(np.random.default_rng(2), 2, 48)
    rng = np.random.default_rng(2)
    img, _ = draw_scene(rng, (48, 48), num_objects=(1, 3))
    assert torch.equal(x0[0], torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
    with pytest.raises(ValueError, match='unknown scene kind'):
        scenes(np.random.default_rng(0), 1, 48, kind='blobs')
