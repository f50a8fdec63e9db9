# DoViT in place of the ViT host of a static segmentor, as the authors' configs
# (FLHonker/DoViT-code) have it: decisions read blocks 2, 5, 8 (6, 12, 18 for ViT-L), mmseg
# auxiliary heads (SETR-UP for SETR, FCN for Segmenter; CE weight 0.4 each), token merging once
# more than 10 % of the tokens have stopped, distillation from the trained static segmentor
# (pixel KL, weight 1.0, plus the MSE of the last backbone feature maps, weight 0.5). List this
# file next to the static config. It sets `find_unused_parameters` (no static config does); the
# segmentor and backbone changes, the auxiliary heads and the evaluators (mIoU, then the
# complexity metric) are variables, because the static config already holds `model` and the
# evaluators and mmengine refuses a key defined by two bases. The config adds what is its own:
# the classes, the threshold xi, and the hooks with its teacher.
find_unused_parameters = True

dovit_segmentor = dict(
    type='mmdyn.DoViTEncoderDecoder',
    aux_loss_weight=1.0,
    distill_loss=dict(temperature=1.0, loss_weight=1.0),
    feat_distill_loss=dict(loss_weight=0.5))
# auxiliary heads (in_channels and num_classes come from the backbone)
dovit_aux_norm_cfg = dict(type='SyncBN', requires_grad=True)
dovit_aux_setr = dict(
    type='SETRUPHead', channels=256, num_convs=1, up_scale=4, kernel_size=1, dropout_ratio=0,
    norm_cfg=dovit_aux_norm_cfg, act_cfg=dict(type='ReLU'), align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
dovit_aux_fcn = dict(
    type='FCNHead', channels=256, num_convs=1, kernel_size=1, concat_input=False,
    dropout_ratio=0, norm_cfg=dovit_aux_norm_cfg, act_cfg=dict(type='ReLU'),
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
dovit_backbone = dict(
    type='mmdyn.DoViT', decision_layers=(2, 5, 8), merge_tokens=True, agg_rate=0.1)
# the distillation hook also hands over the teacher's backbone features (feature MSE)
dovit_teacher_features = ('backbone', )
dovit_evaluators = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
