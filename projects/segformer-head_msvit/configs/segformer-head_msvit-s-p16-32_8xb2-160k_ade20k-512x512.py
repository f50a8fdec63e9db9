# mmseg's own SegFormer (MiT-B0) ADE20K config with the MiT encoder replaced by MSViT-S/16,32
# (mixed-scale tokens: every 32x32 region one coarse token or four 16x16 fine ones, chosen by a
# gate). MSViT outputs one map on the fine (1/16) grid; mmseg's MultiLevelNeck resizes it to the
# four strides the SegFormer head expects (1/4, 1/8, 1/16, 1/32).
_base_ = 'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.MSViT',
        arch='vit-s',
        img_size=(512, 512),
        patch_size=16,
        coarse_size=32,
        out_type='featmap',
        out_indices=-1,
        final_norm=True,
        drop_path_rate=0.1,
        interpolate_mode='bicubic',
        gate_loss='gbas',  # the gate trains with the segmentor, towards g* = half the regions fine
        target=0.5,
        loss_weight=4.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(type='MultiLevelNeck', in_channels=[384], out_channels=256, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[256, 256, 256, 256]))

custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
find_unused_parameters = True
