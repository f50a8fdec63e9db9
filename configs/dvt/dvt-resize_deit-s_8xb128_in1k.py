# DVT-DeiT-S with one patch-16 tokenizer per exit and the image resized to grid * 16 px (112,
# 160, 224; bilinear, antialiased) instead of the public code's tokenizers at 224 (the default
# config dvt_deit-s_8xb128_in1k.py). The paper does not say how the DeiT token grids are made;
# this was mmdyn's earlier default. Same recipe, both reuses.
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    exits=[7, 10, 14],
    patch_size=16,
    thresholds_file='work_dirs/dvt-resize_deit-s_8xb128_in1k/thresholds.json')
