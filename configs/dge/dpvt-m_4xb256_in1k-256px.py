# Static DPVT-medium on ImageNet-1k at 256x256 (recipe of pvt-s_4xb256_in1k-256px.py).
_base_ = './pvt-s_4xb256_in1k-256px.py'

# DPVT classifies as vtpack's DPVT: no class token, a final norm (LN eps 1e-6) on the
# stage-4 tokens, global average pooling, the linear head
model = dict(
    backbone=dict(type='mmdyn.DPVT', arch='medium', drop_path_rate=0.3, cls_token=False,
                  final_norm=True),
    neck=dict(_delete_=True, type='GlobalAveragePooling'))
# 20 warm-up epochs, as vtpack's DGE and DPVT scripts (--warmup-epochs 20)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20)]
