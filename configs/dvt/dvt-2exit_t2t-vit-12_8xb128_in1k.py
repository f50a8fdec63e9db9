# Two-exit DVT on T2T-ViT-12 (7x7 then 14x14 tokens): the model of the paper's Table 2
# (practical speed), same recipe as the 3-exit T2T-ViT-12 model.
_base_ = './dvt_t2t-vit-12_8xb128_in1k.py'

model = dict(
    exits=[7, 14],
    thresholds=[1.0],
    thresholds_file='work_dirs/dvt-2exit_t2t-vit-12_8xb128_in1k/thresholds.json')
