# Semantic FPN with a PVTv2-B1 backbone on ADE20K, 512x512 crops, 40k iterations.
# The PVTv2 recipe (whai362/PVT, Semantic FPN on ADE20K): AdamW lr 2e-4, weight decay 1e-4,
# poly schedule (power 0.9, min lr 0) over 40k iterations, batch 32 (here 4 GPUs x 8);
# FPN neck with 256 channels, FPNHead with 128 channels, 150 classes.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
from mmdyn.utils.config_parts import pvtv2_adamw as __pvtv2_adamw  # noqa: E402
from mmdyn.utils.config_parts import pvtv2_backbone as __pvtv2_backbone  # noqa: E402

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=__pvtv2_backbone('b1'),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(channels=128, num_classes=150))

# 4 GPUs x 8 images = 32 images per iteration
train_dataloader = dict(batch_size=8)

optim_wrapper = __pvtv2_adamw()
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)
]
