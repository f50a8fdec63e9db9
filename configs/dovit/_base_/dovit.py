# DoViT in place of the ViT host of a static segmentor (decisions after blocks 3, 6, 9 with
# 1x1-conv auxiliary heads, alpha = 1.0; token merging; pixel-KL self-distillation, beta = 0.4):
# list this file next to the static config. It sets `find_unused_parameters` (no static config
# does); the segmentor and backbone changes and the evaluators (mIoU, then the complexity metric)
# are variables, because the static config already holds `model` and the evaluators and mmengine
# refuses a key defined by two bases. The config adds what is its own: the classes, the
# threshold xi, and the hooks with its teacher.
find_unused_parameters = True

dovit_segmentor = dict(
    type='mmdyn.DoViTEncoderDecoder',
    aux_loss_weight=1.0,
    distill_loss=dict(temperature=1.0, loss_weight=0.4))
dovit_backbone = dict(type='mmdyn.DoViT', decision_layers=(3, 6, 9), merge_tokens=True)
dovit_evaluators = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmdyn.ComplexityMetric')
]
