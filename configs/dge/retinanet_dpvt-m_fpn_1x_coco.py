# RetinaNet 1x with DPVT-medium on COCO, the static baseline of the DGE variant (initialise from
# a DPVT ImageNet classifier, dpvt-m_4xb256_in1k-256px.py; none was released). Not in the paper.
_base_ = './retinanet_pvt-s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmdyn.DPVT', arch='medium', init_cfg=None))
