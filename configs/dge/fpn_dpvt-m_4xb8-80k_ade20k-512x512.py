# Static baseline of DGE Table 3: Semantic FPN with DPVT-medium (PVT v1 with deformable point
# attention, 4 points, no spatial reduction). No DPVT ImageNet checkpoint was released: train
# dpvt-m_4xb256_in1k-256px.py first and load it with
# init_cfg=dict(type='Pretrained', checkpoint=CKPT, prefix='backbone.').
_base_ = './fpn_pvt-s_4xb8-80k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmdyn.DPVT', arch='medium', init_cfg=None))
