"""Procedurally drawn scenes written in the real ADE20K, Cityscapes, COCO and ImageNet layouts.

No public data set can be downloaded here, so tests and the quickstart run the real
mmdet/mmseg/mmpretrain datasets and pipelines on scenes drawn by this module. A scene is a flat or
low-texture background with a few textured shapes. Each object class has its own shape *and*
texture (stripes, checkerboard, dots, noise), while backgrounds are nearly flat, so a dynamic
model has something real to learn: spend fine tokens on objects, coarse tokens on background.

The same ``seed`` writes the same files, byte for byte.

The object classes are named after real classes of each data set, and their label values are the
real ones (ADE20K ``reduce_zero_label`` convention, Cityscapes train ids and label ids, COCO
category ids, ImageNet class indices and WordNet ids), so the stock class lists and metrics apply.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

LAYOUTS = ('ade20k', 'cityscapes', 'coco', 'imagenet')

#: Default image size (H, W) per layout.
DEFAULT_SIZES = {
    'ade20k': (128, 128),
    'cityscapes': (128, 256),
    'coco': (128, 160),
    'imagenet': (64, 64),
}

#: The four object classes: the shape and texture drawn for each.
SHAPES = ('ellipse', 'rectangle', 'triangle', 'diamond')
TEXTURES = ('stripes', 'checker', 'dots', 'noise')

# Label spaces. ADE20K: index in mmseg's 150-class list + 1 (0 = "other", ignored with
# reduce_zero_label). Cityscapes: (train id, label id). COCO: category id and name.
# ImageNet: (class index, WordNet id).
ADE20K_BACKGROUND = ('wall', 1)
ADE20K_OBJECTS = (('person', 13), ('car', 21), ('tree', 5), ('painting', 23))
CITYSCAPES_BACKGROUND = ('road', 0, 7)
CITYSCAPES_OBJECTS = (('person', 11, 24), ('car', 13, 26), ('vegetation', 8, 21),
                      ('traffic sign', 7, 20))
COCO_OBJECTS = (('person', 1), ('car', 3), ('dog', 18), ('kite', 38))
#: All 80 COCO categories with their real ids: a real annotation file lists every category, and
#: mmdet's CocoDataset numbers labels by the categories the file lists.
COCO_CATEGORIES = tuple(zip(
    ('person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
     'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
     'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
     'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
     'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
     'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
     'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
     'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
     'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
     'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush'),
    (i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))))
IMAGENET_OBJECTS = (('tench', 0, 'n01440764'), ('goldfish', 1, 'n01443537'),
                    ('great white shark', 2, 'n01484850'), ('tiger shark', 3, 'n01491361'))


class Instance:
    """One drawn object: its class index (0..3), boolean mask and polygon (x, y) points."""

    def __init__(self, cls: int, mask: np.ndarray, polygon: np.ndarray):
        self.cls = cls
        self.mask = mask
        self.polygon = polygon

    @property
    def bbox_xywh(self) -> List[float]:
        """The polygon's extent, as COCO boxes are."""
        x0, y0 = self.polygon.min(0)
        x1, y1 = self.polygon.max(0)
        return [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                round(float(y1 - y0), 2)]


def _texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A [h, w] pattern in [0, 1]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'stripes':
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, 7)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period)
    if kind == 'checker':
        p = int(rng.integers(3, 6))
        return (((x // p) + (y // p)) % 2).astype(np.float32)
    if kind == 'dots':
        p = int(rng.integers(5, 8))
        d = ((x % p) - p / 2) ** 2 + ((y % p) - p / 2) ** 2
        return (d < (p / 3) ** 2).astype(np.float32)
    if kind == 'noise':
        return rng.random((h, w), dtype=np.float32)
    raise ValueError(f'unknown texture {kind!r}')


def _polygon(shape: str, cx: float, cy: float, rx: float, ry: float,
             rng: np.random.Generator) -> np.ndarray:
    if shape == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    elif shape == 'rectangle':
        pts = np.array([[cx - rx, cy - ry], [cx + rx, cy - ry], [cx + rx, cy + ry],
                        [cx - rx, cy + ry]])
    elif shape == 'triangle':
        pts = np.array([[cx, cy - ry], [cx + rx, cy + ry], [cx - rx, cy + ry]])
    elif shape == 'diamond':
        pts = np.array([[cx, cy - ry], [cx + rx, cy], [cx, cy + ry], [cx - rx, cy]])
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return pts.astype(np.float32)


def draw_scene(rng: np.random.Generator, size: Tuple[int, int], num_objects: Tuple[int, int] = (1, 4),
               classes: Optional[Sequence[int]] = None,
               scale: Tuple[float, float] = (0.12, 0.3)) -> Tuple[np.ndarray, List[Instance]]:
    """Draw one scene.

    Args:
        rng: the random generator (all randomness comes from it).
        size: (H, W).
        num_objects: inclusive range of the number of objects.
        classes: restrict object classes to these indices (0..3).
        scale: range of an object's half-size as a fraction of min(H, W).

    Returns:
        ``(image, instances)``: a BGR uint8 image and non-overlapping instances.
    """
    h, w = size
    if h < 16 or w < 16:
        raise ValueError(f'scene size must be at least 16x16, got {h}x{w}')
    classes = list(range(len(SHAPES))) if classes is None else list(classes)
    # Background: a flat colour, optionally a gentle gradient, plus weak noise (low texture).
    base = rng.uniform(60, 200, size=3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    if rng.random() < 0.5:
        gy = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None]
        img += gy * rng.uniform(-20, 20, size=3)
    img += rng.normal(0, 2.0, size=(h, w, 3))

    occupied = np.zeros((h, w), bool)
    instances: List[Instance] = []
    n = int(rng.integers(num_objects[0], num_objects[1] + 1))
    m = min(h, w)
    for _ in range(n):
        cls = int(rng.choice(classes))
        for _attempt in range(20):
            # at most half the map less a pixel: the centre has room on both sides
            rx = min(rng.uniform(*scale) * m, w / 2 - 1)
            ry = min(rx * rng.uniform(0.7, 1.3), h / 2 - 1)
            cx = rng.uniform(rx + 1, w - rx - 1)
            cy = rng.uniform(ry + 1, h - ry - 1)
            poly = _polygon(SHAPES[cls], cx, cy, rx, ry, rng)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            mask = mask.astype(bool)
            if mask.sum() >= 16 and not (mask & occupied).any():
                break
        else:
            continue
        occupied |= mask
        color = rng.uniform(0, 255, size=3)
        tex = _texture(TEXTURES[cls], h, w, rng)[..., None]
        pattern = color * (0.35 + 0.65 * tex) + (255 - color) * 0.25 * (1 - tex)
        img[mask] = pattern[mask]
        instances.append(Instance(cls, mask, poly))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _label_map(size, instances, background: int, values: Sequence[int]) -> np.ndarray:
    seg = np.full(size, background, np.uint8)
    for inst in instances:
        seg[inst.mask] = values[inst.cls]
    return seg


def _write(path: str, img: np.ndarray, jpeg: bool = False) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(path, img, params):
        raise OSError(f'could not write {path}')


def _splits(num: int, num_val: Optional[int]) -> Dict[str, int]:
    if num < 1:
        raise ValueError(f'--num must be >= 1, got {num}')
    if num_val is not None and num_val < 1:
        raise ValueError(f'--num-val must be >= 1, got {num_val}')
    return {'train': num, 'val': max(2, num // 4) if num_val is None else num_val}


def make_ade20k(out, rng, size, num, num_val=None) -> Dict[str, int]:
    """``images/{training,validation}/*.jpg`` and ``annotations/.../*.png`` (ADEChallengeData2016)."""
    counts = _splits(num, num_val)
    values = [v for _, v in ADE20K_OBJECTS]
    for split, n in counts.items():
        sub = 'training' if split == 'train' else 'validation'
        for i in range(n):
            img, insts = draw_scene(rng, size)
            name = f'ADE_train_{i + 1:08d}' if split == 'train' else f'ADE_val_{i + 1:08d}'
            _write(osp.join(out, 'images', sub, name + '.jpg'), img, jpeg=True)
            seg = _label_map(size, insts, ADE20K_BACKGROUND[1], values)
            _write(osp.join(out, 'annotations', sub, name + '.png'), seg)
    return counts


def make_cityscapes(out, rng, size, num, num_val=None) -> Dict[str, int]:
    """``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and ``gtFine`` label/train ids."""
    counts = _splits(num, num_val)
    train_ids = [t for _, t, _ in CITYSCAPES_OBJECTS]
    label_ids = [lbl for _, _, lbl in CITYSCAPES_OBJECTS]
    cities = {'train': ('aachen', 'bochum'), 'val': ('frankfurt',)}
    for split, n in counts.items():
        for i in range(n):
            city = cities[split][i % len(cities[split])]
            stem = f'{city}_{i:06d}_000019'
            img, insts = draw_scene(rng, size)
            _write(osp.join(out, 'leftImg8bit', split, city, stem + '_leftImg8bit.png'), img)
            gt = osp.join(out, 'gtFine', split, city, stem)
            _write(gt + '_gtFine_labelTrainIds.png',
                   _label_map(size, insts, CITYSCAPES_BACKGROUND[1], train_ids))
            _write(gt + '_gtFine_labelIds.png',
                   _label_map(size, insts, CITYSCAPES_BACKGROUND[2], label_ids))
    return counts


def make_coco(out, rng, size, num, num_val=None) -> Dict[str, int]:
    """``{train,val}2017/*.jpg`` and ``annotations/instances_{train,val}2017.json``."""
    counts = _splits(num, num_val)
    categories = [dict(id=cid, name=name, supercategory='object') for name, cid in COCO_CATEGORIES]
    ann_id = 1
    for split, n in counts.items():
        images, annotations = [], []
        for i in range(n):
            img_id = i + 1 + (0 if split == 'train' else 100000)
            file_name = f'{img_id:012d}.jpg'
            img, insts = draw_scene(rng, size)
            _write(osp.join(out, f'{split}2017', file_name), img, jpeg=True)
            images.append(dict(id=img_id, file_name=file_name, height=size[0], width=size[1]))
            for inst in insts:
                poly = [round(float(v), 2) for v in inst.polygon.reshape(-1)]
                annotations.append(dict(
                    id=ann_id, image_id=img_id, category_id=COCO_OBJECTS[inst.cls][1],
                    segmentation=[poly], area=float(inst.mask.sum()), bbox=inst.bbox_xywh,
                    iscrowd=0))
                ann_id += 1
        ann = dict(info=dict(description='mmdyn generated scenes', version='1.0'), licenses=[],
                   images=images, annotations=annotations, categories=categories)
        path = osp.join(out, 'annotations', f'instances_{split}2017.json')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(ann, f)
    return counts


def make_imagenet(out, rng, size, num, num_val=None) -> Dict[str, int]:
    """``train/<wnid>/*.JPEG``, ``val/*.JPEG`` and ``meta/{train,val}.txt`` (path label)."""
    counts = _splits(num, num_val)
    for split, n in counts.items():
        lines = []
        for i in range(n):
            cls = i % len(IMAGENET_OBJECTS)
            _, label, wnid = IMAGENET_OBJECTS[cls]
            img, _ = draw_scene(rng, size, num_objects=(1, 1), classes=[cls], scale=(0.25, 0.4))
            if split == 'train':
                rel = f'{wnid}/{wnid}_{i + 1}.JPEG'
            else:
                rel = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
            _write(osp.join(out, split, rel), img, jpeg=True)
            lines.append(f'{rel} {label}')
        os.makedirs(osp.join(out, 'meta'), exist_ok=True)
        with open(osp.join(out, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return counts


_MAKERS = dict(ade20k=make_ade20k, cityscapes=make_cityscapes, coco=make_coco,
               imagenet=make_imagenet)


def make_toy_dataset(layout: str, out: str, num: int = 20, size: Optional[Tuple[int, int]] = None,
                     seed: int = 0, num_val: Optional[int] = None) -> Dict[str, int]:
    """Write a generated data set in ``layout`` under ``out`` (a new or empty folder: the data
    sets read every image of their folders, so one written over another would hold the other's
    images too); returns images per split."""
    if layout not in _MAKERS:
        raise ValueError(f'unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)}')
    if osp.exists(out) and not osp.isdir(out):
        raise ValueError(f'--out {out} is a file, not a folder')
    if osp.isdir(out) and os.listdir(out):
        raise ValueError(f'--out {out} is not empty: give a new or empty folder (a data set '
                         'written over another would also hold its images)')
    size = tuple(size) if size is not None else DEFAULT_SIZES[layout]
    rng = np.random.default_rng(seed)
    return _MAKERS[layout](out, rng, size, num, num_val)
