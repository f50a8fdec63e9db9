# Static baseline of DGE Table 2: Mask R-CNN 1x with DPVT-small (initialise from a DPVT
# ImageNet classifier, dpvt-s_4xb256_in1k-256px.py; none was released).
_base_ = './mask-rcnn_pvt-s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmdyn.DPVT', arch='small', init_cfg=None))
