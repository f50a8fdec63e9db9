# Table 6 ablation: no feature reuse, no relationship reuse (three independent transformers;
# each exit is a static DeiT-S at its token count).
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    feature_reuse=False,
    relation_reuse=False,
    thresholds_file='work_dirs/dvt-noreuse_deit-s_8xb128_in1k/thresholds.json')
