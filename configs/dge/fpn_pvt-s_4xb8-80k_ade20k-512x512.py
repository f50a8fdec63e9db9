# Static baseline of DGE Table 3: Semantic FPN with a PVT-Small (v1) backbone on ADE20K.
# The DGE paper's recipe (Sec. 4.2.2, following PVT): 512x512 crops with random scaling 0.5-2.0
# and flipping (mmseg's ADE20K pipeline), 80k iterations, batch 32 (here 4 GPUs x 8), AdamW
# lr 1e-4 (weight decay 1e-4 as PVT's Semantic FPN), poly decay to 0 (power 0.9).
# Everything else (FPN neck with 256 channels, FPNHead with 128 channels, 150 classes, the
# data pipeline) is the PVTv2-B1 Semantic FPN baseline's; only the backbone and the schedule
# (80k instead of 40k iterations, lr 1e-4 instead of 2e-4) differ.
_base_ = '../baselines/fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='mmdyn.PVT',
        arch='small',
        init_cfg=dict(
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth')))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
