# Static DPVT-small on ImageNet-1k at 256x256 (recipe of pvt-s_4xb256_in1k-256px.py).
_base_ = './pvt-s_4xb256_in1k-256px.py'

# DPVT classifies by global average pooling, no class token (vtpack's DPVT has none)
model = dict(
    backbone=dict(type='mmdyn.DPVT', arch='small', cls_token=False),
    neck=dict(_delete_=True, type='GlobalAveragePooling'))
