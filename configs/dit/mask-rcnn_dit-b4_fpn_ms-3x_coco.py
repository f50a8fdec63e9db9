# mask-rcnn with DiT-B4 on COCO, 3x + multi-scale (paper Table 3); recipe as DiT-B2.
_base_ = './mask-rcnn_dit-b2_fpn_ms-3x_coco.py'

model = dict(backbone={{_base_.dit_coco_sizes.b4}})
