# Table 6 ablation on T2T-ViT-12 (the host of the paper's Table 6): no feature reuse, no
# relationship reuse (three independent T2T-ViT-12s; each exit is a static T2T-ViT-12 at its
# token count).
_base_ = './dvt_t2t-vit-12_8xb128_in1k.py'

model = dict(
    feature_reuse=False,
    relation_reuse=False,
    thresholds_file='work_dirs/dvt-noreuse_t2t-vit-12_8xb128_in1k/thresholds.json')
