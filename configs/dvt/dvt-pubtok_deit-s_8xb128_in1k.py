# DVT-DeiT-S with the public code's tokenizers instead of resizing the image: the 224 px input
# goes to every exit; 7x7 tokens from 32x32 patches, 10x10 from 23x23 patches with padding 3,
# 14x14 from 16x16 patches. This is the layout of the released DVT_Deit_small checkpoint:
# convert it with tools/model_converters/t2t2mmdyn.py (see README) or give it as
# init_cfg=dict(type='Pretrained', checkpoint=...) (converted on load).
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    exits=[
        dict(grid=7, patch_size=32, input_size=224),
        dict(grid=10, patch_size=23, patch_pad=3, input_size=224),
        dict(grid=14, patch_size=16),
    ],
    thresholds_file='work_dirs/dvt-pubtok_deit-s_8xb128_in1k/thresholds.json')
