# Table 6 ablation: relationship reuse only.
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    feature_reuse=False,
    relation_reuse=True,
    thresholds_file='work_dirs/dvt-rreuse_deit-s_8xb128_in1k/thresholds.json')
