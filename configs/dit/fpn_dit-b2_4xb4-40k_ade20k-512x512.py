# DiT-B2 in Semantic FPN on ADE20K (paper Table 5: 43.4 GFLOPs at 512x512, 47.4 mIoU; PVTv2-B2:
# 45.8 GFLOPs, 45.2 mIoU). Paper recipe (Sec. 4.3): AdamW lr 1e-4, 40k iterations, batch 16
# (4 GPUs x 4), poly decay power 0.9, random resize + 512x512 crops, test shorter side 512.
# Weight decay is not given: 1e-4 as the PVTv2 Semantic FPN recipe. No DiT ImageNet checkpoint
# was released: the backbone starts from the PVTv2-B2 ImageNet weights tiled over the routing
# grid (every B[i][j] <- PVTv2 stage i, every P[i][j] <- patch embedding i+1; README).
_base_ = ['../baselines/fpn_pvtv2-b2_4xb8-40k_ade20k-512x512.py', './_base_/dense-backbones.py']
# (mmdyn's hooks and find_unused_parameters come with _base_/dit-b2_detector-plugin.py)

model = dict(backbone={{_base_.dit_b2_backbone}})
# 4 GPUs x 4 images = 16 images per iteration
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=1e-4))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
test_evaluator = val_evaluator
