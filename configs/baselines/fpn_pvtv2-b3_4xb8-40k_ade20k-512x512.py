# Semantic FPN with a PVTv2-B3 backbone on ADE20K; recipe as for PVTv2-B1.
_base_ = './fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py'

from mmdyn.utils.config_parts import pvtv2_backbone as __pvtv2_backbone  # noqa: E402

model = dict(backbone=__pvtv2_backbone('b3'))
