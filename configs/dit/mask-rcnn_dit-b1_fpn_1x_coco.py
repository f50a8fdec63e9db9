# mask-rcnn with DiT-B1 on COCO, 1x (paper Table 4: 42.9 AP / 39.9 mask AP); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(backbone={{_base_.dit_coco_sizes.b1}})
