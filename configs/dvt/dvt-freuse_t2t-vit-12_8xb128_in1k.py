# Table 6 ablation on T2T-ViT-12 (the host of the paper's Table 6): feature reuse only.
_base_ = './dvt_t2t-vit-12_8xb128_in1k.py'

model = dict(
    feature_reuse=True,
    relation_reuse=False,
    thresholds_file='work_dirs/dvt-freuse_t2t-vit-12_8xb128_in1k/thresholds.json')
