# Table 3 ablation: SETR-DoViT-B on Cityscapes (xi = 0.985) without self-distillation (Eq. 11):
# no teacher, loss = decode CE + the auxiliary heads' CEs. Everything else as the parent config.
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'

model = dict(distill_loss=None)
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]
