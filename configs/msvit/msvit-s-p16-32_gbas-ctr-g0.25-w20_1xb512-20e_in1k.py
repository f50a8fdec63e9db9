# MSViT-S/16,32, g* = 0.25, lambda = 20 (the paper's g* x lambda sweep, Table 1 / Fig. 11).
_base_ = './msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
model = dict(backbone=dict(target=0.25, loss_weight=20.0))
