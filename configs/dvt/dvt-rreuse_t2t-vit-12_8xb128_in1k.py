# Table 6 ablation on T2T-ViT-12 (the host of the paper's Table 6): relationship reuse only.
_base_ = './dvt_t2t-vit-12_8xb128_in1k.py'

model = dict(
    feature_reuse=False,
    relation_reuse=True,
    thresholds_file='work_dirs/dvt-rreuse_t2t-vit-12_8xb128_in1k/thresholds.json')
