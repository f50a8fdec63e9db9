"""The generated data sets load with the real dataset classes and standard pipelines."""
import hashlib
import os
import os.path as osp

import numpy as np
import pytest

from mmdyn.datasets import toy
from mmdyn.datasets.toy import make_toy_dataset


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = osp.join(dirpath, f)
            h.update(osp.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.mark.parametrize('layout', toy.LAYOUTS)
def test_same_seed_same_files(tmp_path, layout):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    make_toy_dataset(layout, a, num=3, num_val=2, seed=7)
    make_toy_dataset(layout, b, num=3, num_val=2, seed=7)
    make_toy_dataset(layout, c, num=3, num_val=2, seed=8)
    assert _tree_digest(a) == _tree_digest(b)
    assert _tree_digest(a) != _tree_digest(c)


def test_objects_are_textured_background_is_flat():
    rng = np.random.default_rng(0)
    obj_std, bg_std = [], []
    for _ in range(10):
        img, insts = toy.draw_scene(rng, (96, 96), num_objects=(2, 3))
        gray = img.astype(np.float32).mean(-1)
        # local texture: absolute horizontal gradient
        grad = np.abs(np.diff(gray, axis=1))
        fg = np.zeros(gray.shape, bool)
        for inst in insts:
            fg |= inst.mask
        inner = fg[:, 1:] & fg[:, :-1]
        outer = ~fg[:, 1:] & ~fg[:, :-1]
        obj_std.append(grad[inner].mean())
        bg_std.append(grad[outer].mean())
    assert np.mean(obj_std) > 5 * np.mean(bg_std)


def test_instances_do_not_overlap():
    rng = np.random.default_rng(3)
    for _ in range(10):
        _, insts = toy.draw_scene(rng, (64, 64), num_objects=(3, 4))
        total = sum(i.mask.astype(int) for i in insts)
        assert total.max() <= 1


def test_large_objects_fit_the_map():
    """The classification layout's one large object (up to 0.4 of the side, stretched up to
    1.3x) always finds room: every seed writes its scenes (some raised once, e.g. seed 0 of
    the README's command at 64x64), and every object lies inside the map."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            img, insts = toy.draw_scene(rng, (64, 64), num_objects=(1, 1), classes=[0],
                                        scale=(0.25, 0.4))
            assert img.shape == (64, 64, 3) and len(insts) == 1
            poly = insts[0].polygon
            assert poly.min() >= 0 and poly[:, 0].max() <= 63 and poly[:, 1].max() <= 63


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='unknown layout'):
        make_toy_dataset('voc', str(tmp_path))
    with pytest.raises(ValueError, match='--num'):
        make_toy_dataset('ade20k', str(tmp_path), num=0)
    with pytest.raises(ValueError, match='at least 16x16'):
        make_toy_dataset('ade20k', str(tmp_path), num=1, size=(8, 8))
    for bad in (0, -3):  # an empty val split is a meta/val.txt mmpretrain cannot read
        with pytest.raises(ValueError, match='--num-val must be >= 1'):
            make_toy_dataset('imagenet', str(tmp_path / 'v'), num=2, num_val=bad)
    assert not (tmp_path / 'v').exists()


def test_an_earlier_data_set_is_not_written_over(tmp_path):
    """A second data set into the same folder would load the first one's images too (8 where
    the tool said 3): refused; a file is no folder."""
    out = tmp_path / 'ade'
    assert make_toy_dataset('ade20k', str(out), num=8, num_val=2, size=(32, 32)) == dict(
        train=8, val=2)
    with pytest.raises(ValueError, match='is not empty'):
        make_toy_dataset('ade20k', str(out), num=3, num_val=2, size=(32, 32))
    assert len(list((out / 'images' / 'training').iterdir())) == 8
    (tmp_path / 'f').write_text('x')
    with pytest.raises(ValueError, match='is a file'):
        make_toy_dataset('ade20k', str(tmp_path / 'f'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert make_toy_dataset('ade20k', str(empty), num=1, num_val=1, size=(32, 32))['train'] == 1


def test_label_values_are_the_real_classes():
    from mmdet.datasets import CocoDataset
    from mmpretrain.datasets import ImageNet
    from mmseg.datasets import ADE20KDataset, CityscapesDataset
    ade = ADE20KDataset.METAINFO['classes']
    for name, value in (toy.ADE20K_BACKGROUND, ) + toy.ADE20K_OBJECTS:
        assert ade[value - 1].strip() == name  # reduce_zero_label: png value v -> class v - 1
    cs = CityscapesDataset.METAINFO['classes']
    for name, train_id, _ in (toy.CITYSCAPES_BACKGROUND, ) + toy.CITYSCAPES_OBJECTS:
        assert cs[train_id] == name
    coco = CocoDataset.METAINFO['classes']
    assert tuple(n for n, _ in toy.COCO_CATEGORIES) == tuple(coco)
    assert set(toy.COCO_OBJECTS) <= set(toy.COCO_CATEGORIES)
    inet = ImageNet.METAINFO['classes']
    for name, idx, _ in toy.IMAGENET_OBJECTS:
        assert inet[idx].split(',')[0].strip().lower() == name


def _build(dataset_cls, **kw):
    ds = dataset_cls(**kw)
    ds.full_init()
    return ds


def test_ade20k_layout_loads_with_mmseg(toy_ade20k):
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    init_default_scope('mmseg')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='PackSegInputs')]
    for prefix, n in (('training', 8), ('validation', 2)):
        ds = _build(ADE20KDataset, data_root=toy_ade20k, pipeline=pipeline,
                    data_prefix=dict(img_path=f'images/{prefix}',
                                     seg_map_path=f'annotations/{prefix}'))
        assert len(ds) == n
        allowed = {v - 1 for _, v in (toy.ADE20K_BACKGROUND, ) + toy.ADE20K_OBJECTS}
        seen = set()
        for i in range(n):
            out = ds[i]
            assert tuple(out['inputs'].shape) == (3, 64, 64)
            seg = out['data_samples'].gt_sem_seg.data.numpy()
            seen |= set(np.unique(seg).tolist())
        assert seen <= allowed and len(seen) >= 2


def test_cityscapes_layout_loads_with_mmseg(toy_cityscapes):
    from mmengine.registry import init_default_scope
    from mmseg.datasets import CityscapesDataset
    init_default_scope('mmseg')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    ds = _build(CityscapesDataset, data_root=toy_cityscapes, pipeline=pipeline,
                data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'))
    assert len(ds) == 4
    allowed = {t for _, t, _ in (toy.CITYSCAPES_BACKGROUND, ) + toy.CITYSCAPES_OBJECTS}
    seg = np.concatenate([ds[i]['data_samples'].gt_sem_seg.data.numpy().ravel()
                          for i in range(4)])
    assert set(np.unique(seg).tolist()) <= allowed
    assert tuple(ds[0]['inputs'].shape) == (3, 64, 128)


def test_coco_layout_loads_with_mmdet(toy_coco):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs')]
    ds = _build(CocoDataset, data_root=toy_coco, ann_file='annotations/instances_train2017.json',
                data_prefix=dict(img='train2017/'), pipeline=pipeline,
                filter_cfg=dict(filter_empty_gt=False))
    assert len(ds) == 6
    names = CocoDataset.METAINFO['classes']
    import json
    with open(osp.join(toy_coco, 'annotations', 'instances_train2017.json')) as f:
        raw = json.load(f)
    id2name = {c['id']: c['name'] for c in raw['categories']}
    assert len(id2name) == 80
    n_inst = 0
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        inst = sample.gt_instances
        masks = inst.masks.to_ndarray()
        boxes = inst.bboxes.tensor.numpy()
        assert masks.shape[1:] == (96, 128)
        for m, b, lab in zip(masks, boxes, inst.labels.tolist()):
            ys, xs = np.nonzero(m)
            # the box is the tight box of the mask (within a pixel of polygon rounding)
            assert abs(xs.min() - b[0]) <= 1.5 and abs(ys.min() - b[1]) <= 1.5
            assert abs(xs.max() + 1 - b[2]) <= 1.5 and abs(ys.max() + 1 - b[3]) <= 1.5
            assert names[lab] in dict(toy.COCO_OBJECTS)
            n_inst += 1
    assert n_inst >= len(ds)
    # labels are the real class names of the annotations' category ids
    anns = [a for a in raw['annotations'] if a['image_id'] == ds.get_data_info(0)['img_id']]
    got = [names[lab] for lab in ds[0]['data_samples'].gt_instances.labels.tolist()]
    assert got == [id2name[a['category_id']] for a in anns]


def test_imagenet_layout_loads_with_mmpretrain(toy_imagenet):
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import ImageNet
    init_default_scope('mmpretrain')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    for split, n in (('train', 8), ('val', 4)):
        ds = _build(ImageNet, data_root=toy_imagenet, split=split, pipeline=pipeline)
        assert len(ds) == n
        labels = [int(ds[i]['data_samples'].gt_label) for i in range(n)]
        assert labels == [i % 4 for i in range(n)]
        assert tuple(ds[0]['inputs'].shape) == (3, 32, 32)


def test_cli_writes_and_reports(tmp_path, run_tool, repo_root):
    r = run_tool('dataset_converters/make_toy_dataset.py', '--layout', 'coco', '--out',
                 tmp_path / 'c', '--num', 3, '--size', 48, 64, '--seed', 2)
    assert r.returncode == 0, r.stderr
    assert 'train 3' in r.stdout and 'val 2' in r.stdout
    assert osp.isfile(tmp_path / 'c' / 'annotations' / 'instances_val2017.json')
    # the error path in this process (no second interpreter start): sys.exit(message) is what
    # a program prints on stderr before exiting with status 1
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        '_make_toy_dataset_tool',
        osp.join(repo_root, 'tools', 'dataset_converters', 'make_toy_dataset.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as e:
        tool.main(['--layout', 'ade20k', '--out', str(tmp_path / 'd'), '--num', '0'])
    assert isinstance(e.value.code, str) and 'error: --num must be >= 1' in e.value.code
