# mmdyn's ViT host in the static SETR and Segmenter baselines (the DoViT students load their
# weights one to one; SETR resizes the position embedding bilinearly, mmseg's SETR setting that
# the DoViT authors' configs keep, Segmenter bicubically), as variables, because the mmseg
# model bases already hold `model` and mmengine refuses a key defined by two bases. A config
# takes one with `dict(_base_.<name>, img_size=crop_size, ...)`; `_delete_` drops mmseg's ViT
# settings.
# mmseg's ViT/16-384 checkpoints (the ones the DoViT authors' SETR and Segmenter configs load)
mmseg_vit_small = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth'  # noqa
mmseg_vit_base = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_base_p16_384_20220308-96dfe169.pth'  # noqa
mmseg_vit_large = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth'  # noqa
setr_vit_b_host = dict(
    _delete_=True,
    type='mmdyn.ViT',
    arch='vit-b',
    patch_size=16,
    out_indices=(2, 5, 8, 11),
    final_norm=False,
    drop_rate=0.,
    interpolate_mode='bilinear',
    init_cfg=dict(type='Pretrained', checkpoint=mmseg_vit_base))
# Segmenter's: the last block's output, final norm, stochastic depth 0.1 (arch and checkpoint
# are the config's)
segmenter_vit_host = dict(
    _delete_=True,
    type='mmdyn.ViT',
    patch_size=16,
    out_indices=(11, ),
    final_norm=True,
    drop_path_rate=0.1,
    interpolate_mode='bicubic')
# Other SETR hosts: what changes from the ViT-B host (`model = dict(backbone={{_base_.<name>}})`;
# the ViT-S host also needs 384-wide heads, which its config sets)
setr_vit_s_host = dict(
    arch='vit-s', init_cfg=dict(type='Pretrained', checkpoint=mmseg_vit_small))
setr_deit_s_host = dict(
    arch='deit-s',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth'))
setr_deit_b_host = dict(
    arch='deit-b',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth'))
