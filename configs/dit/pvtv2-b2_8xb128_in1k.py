# PVTv2-B2 on ImageNet-1k with DiT's recipe (the static baseline of dit-b2_8xb128_in1k.py; paper
# Table 1 quotes the published PVTv2-B2: 4.0 GFLOPs, 82.0 top-1). Everything as the DiT config
# (DeiT augmentations, AdamW lr 1e-3, wd 0.05, batch 8 x 128, 5 warm-up + cosine, 300 epochs,
# stochastic depth of the size) except the backbone, the gate hooks and the complexity metric.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.PVTv2',
        arch='b2',
        drop_path_rate=0.1,
        out_indices=(3, )))

custom_hooks = []
val_evaluator = [dict(type='Accuracy', topk=(1, 5))]
test_evaluator = val_evaluator
find_unused_parameters = False
