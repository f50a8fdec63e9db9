# Static baseline of DGE Table 1: PVT-Small (v1) on ImageNet-1k at 256x256 (the DGE paper
# re-trains every host at 256 so that maps divide by more granularities).
# Recipe (DGE Sec. 4.1.1 following DeiT/PVT; vtpack's trainer): AdamW lr 1e-3 for batch 1024
# (4 GPUs x 256), weight decay 0.05, cosine, 300 epochs, 5 warm-up epochs (vtpack's static PVT
# script), random resized crops, flipping, RandAugment, Mixup 0.8 / CutMix 1.0, label smoothing
# 0.1, random erasing, repeated augmentation. Classifier: the class token of stage 4, as the
# official PVT v1. Data, schedule and 256x256 pipelines: the DeiT-S config of this folder.
_base_ = './deit-s_4xb256_in1k-256px.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVT',
        arch='small',
        pretrain_img_size=256,
        drop_path_rate=0.1,
        out_indices=(3, ),
        # the official PVT v1 classifier: a class token in stage 4, a final norm, the head on
        # the normalised class token (no neck)
        cls_token=True),
    neck=None,
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False))
# weight decay as vtpack's PVT / DPVT: none on norms, biases and the class token only (their
# position embeddings decay: vtpack's PVT leaves them out of no_weight_decay, its DPVT exempts
# nothing), where mmpretrain's DeiT-S recipe also exempts position embeddings
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(_delete_=True, **{'.cls_token': dict(decay_mult=0.0)})))
