# PVTv2-B1 baseline of fpn_dit-b1_4xb4-40k_ade20k-512x512.py (Semantic FPN, ADE20K) with DiT's
# recipe (AdamW lr 1e-4, batch 16 = 4 GPUs x 4, 40k iterations, poly 0.9): the DiT config with the
# backbone replaced by the static PVTv2 of the same size, without the gate hooks and the complexity
# metric. ../baselines/fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py is the PVTv2 recipe (lr 2e-4, batch
# 32).
_base_ = './fpn_dit-b1_4xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch='b1',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth')))

custom_hooks = []
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU'])]
test_evaluator = val_evaluator
find_unused_parameters = False
