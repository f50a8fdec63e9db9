# DPVT-small + DGE on ImageNet-1k at 256x256 (Fig. 5(b) has DPVT in the budget sweep).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

model = dict(backbone=dict(type='mmdyn.DGEDPVT', arch='small'))
