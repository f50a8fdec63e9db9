# RetinaNet 1x with PVT-Medium + DGE (Phi = {1, 2, 4}, gamma = 0.5); the static baseline's
# recipe. Not in the DGE paper.
_base_ = './retinanet_dge-pvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth')))
