# Two-exit DVT (7x7 then 14x14 tokens; the variant of the paper's Table 2, which it finds
# faster in practice), same recipe as the 3-exit model.
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    exits=[dict(grid=7, patch_size=32, input_size=224), dict(grid=14, patch_size=16)],
    thresholds=[1.0],
    thresholds_file='work_dirs/dvt-2exit_deit-s_8xb128_in1k/thresholds.json')
