# mmseg's own UPerNet R-50 ADE20K config with the ResNet replaced by PVT-Small with dynamic
# grained encoders (DGE, Phi = {1, 2, 4}, budget gamma = 0.5). Everything else (data, schedule,
# heads) is mmseg's; see ../README.md for the lines that differ.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the stock config names a ResNet checkpoint here
    backbone=dict(
        _delete_=True,
        type='mmdyn.DGEPVT',
        arch='small',
        granularities=(1, 2, 4),
        budget=0.5,
        budget_weight=1.0,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

# transformer optimiser (as PVT / DGE's Semantic FPN): AdamW instead of the ResNet's SGD
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4), clip_grad=None)

# realised FLOPs and token ratios: logged in training, reported next to mIoU
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
find_unused_parameters = True  # regions that take a coarse granularity leave weights unused
