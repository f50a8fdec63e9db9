# RetinaNet 1x with DPVT-small on COCO, the static baseline of the DGE variant (initialise from
# a DPVT ImageNet classifier, dpvt-s_4xb256_in1k-256px.py; none was released). Not in the paper.
_base_ = './retinanet_pvt-s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmdyn.DPVT', arch='small', init_cfg=None))
