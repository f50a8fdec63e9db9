# DPVT-small + DGE on ImageNet-1k at 256x256 (Fig. 5(b) has DPVT in the budget sweep).
_base_ = './dge-pvt-s_4xb256_in1k-256px.py'

# DPVT classifies by global average pooling, no class token (vtpack's DPVT has none)
model = dict(
    backbone=dict(type='mmdyn.DGEDPVT', arch='small', cls_token=False),
    neck=dict(_delete_=True, type='GlobalAveragePooling'))
