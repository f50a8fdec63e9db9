# MSDeiT-S/16,32, g* = 0.1, lambda = 4.
_base_ = './msdeit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
model = dict(backbone=dict(target=0.1))
