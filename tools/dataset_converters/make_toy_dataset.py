"""Write a generated data set in a real folder and annotation layout.

    python tools/dataset_converters/make_toy_dataset.py --layout ade20k --out data/toy_ade
        [--num 20] [--num-val 5] [--size 128 128] [--seed 0]

Layouts: ade20k (mmseg ADE20KDataset), cityscapes (mmseg CityscapesDataset), coco (mmdet
CocoDataset, boxes and instance masks), imagenet (mmpretrain ImageNet / CustomDataset).
"""
import argparse
import sys

from mmdyn.datasets.toy import LAYOUTS, make_toy_dataset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--layout', required=True, choices=LAYOUTS)
    p.add_argument('--out', required=True, help='output folder (the data root)')
    p.add_argument('--num', type=int, default=20, help='training images (default 20)')
    p.add_argument('--num-val', type=int, default=None,
                   help='validation images (default max(2, num // 4))')
    p.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                   help='image size (default depends on the layout)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        counts = make_toy_dataset(args.layout, args.out, args.num, args.size, args.seed,
                                  args.num_val)
    except (ValueError, OSError) as e:
        sys.exit(f'make_toy_dataset: error: {e}')
    print(f'wrote {args.layout} layout to {args.out}: ' +
          ', '.join(f'{k} {v}' for k, v in counts.items()))


if __name__ == '__main__':
    main()
