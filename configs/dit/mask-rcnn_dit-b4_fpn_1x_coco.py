# mask-rcnn with DiT-B4 on COCO, 1x (paper Table 4: 48.2 AP / 43.3 mask AP); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(backbone={{_base_.dit_coco_sizes.b4}})
