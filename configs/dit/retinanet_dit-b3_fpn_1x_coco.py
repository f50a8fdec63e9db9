# retinanet with DiT-B3 on COCO, 1x (paper Table 4: 46.8 AP); recipe as DiT-B2.
_base_ = './retinanet_dit-b2_fpn_1x_coco.py'

model = dict(backbone={{_base_.dit_coco_sizes.b3}})
