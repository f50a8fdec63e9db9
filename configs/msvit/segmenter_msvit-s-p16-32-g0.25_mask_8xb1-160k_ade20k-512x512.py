# MSSeg-S/16 (paper Sec. 4.2.1, Fig. 4a): Segmenter (mask transformer, 2 layers) on ADE20K 512x512,
# 160k iterations, 8 GPUs x 1 image, mmseg's Segmenter recipe (SGD lr 1e-3, no weight decay,
# poly, slide test 512/480), with the ViT-S/16 encoder replaced by MSViT: the gate comes from
# the ImageNet MSViT-S/16,32 model trained with g* = 0.25 (msvit-s-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k.py) and is frozen;
# the mixed tokens are copied back to the fine 32x32 grid for the decoder (appendix E.1).
_base_ = 'mmseg::segmenter/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth'  # noqa
gate_checkpoint = 'work_dirs/msvit-s-p16-32_gbas-ctr-g0.25-w4_1xb512-20e_in1k/epoch_20.pth'
model = dict(
    pretrained=None,
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
        freeze_gate=True,
        gate_loss=None,
        target=0.25,  # g* the gate was trained for
        gate_checkpoint=gate_checkpoint,
        gate_checkpoint_prefix='backbone.',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=384, channels=384, embed_dims=384, num_heads=6))
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='mmdyn.ComplexityMetric')]
test_evaluator = val_evaluator
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
find_unused_parameters = True
