# Static baseline of DGE Table 3: Semantic FPN with a PVT-Small (v1) backbone on ADE20K.
# The DGE paper's recipe (Sec. 4.2.2, following PVT): 512x512 crops with random scaling 0.5-2.0
# and flipping (mmseg's ADE20K pipeline), 80k iterations, batch 32 (here 4 GPUs x 8), AdamW
# lr 1e-4 (weight decay 1e-4 as PVT's Semantic FPN), poly decay to 0 (power 0.9).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVT',
        arch='small',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth')),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(channels=128, num_classes=150))

# 4 GPUs x 8 images = 32 images per iteration
train_dataloader = dict(batch_size=8)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)
]
