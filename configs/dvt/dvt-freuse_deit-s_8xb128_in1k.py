# Table 6 ablation: feature reuse only.
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    feature_reuse=True,
    relation_reuse=False,
    thresholds_file='work_dirs/dvt-freuse_deit-s_8xb128_in1k/thresholds.json')
