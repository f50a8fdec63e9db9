# RetinaNet 1x with DPVT-small + DGE (Phi = {1, 2, 4}, gamma = 0.5). Not in the paper.
_base_ = './retinanet_dge-pvt-s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmdyn.DGEDPVT', arch='small', init_cfg=None))
