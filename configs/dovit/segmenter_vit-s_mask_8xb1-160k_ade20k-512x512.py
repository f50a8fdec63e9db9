# Static baseline (and DoViT teacher): Segmenter (mask transformer, 2 layers) with a ViT-S/16
# backbone on ADE20K, 512x512, 160k iterations, 8 GPUs x 1 image. mmseg's Segmenter recipe (SGD
# lr 1e-3, no weight decay, poly schedule, mean = std = 127.5, slide test 512/480) with mmdyn's
# ViT-S host initialised from mmseg's ViT-S/16-384 checkpoint (layout converted on load).
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/vit-hosts.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth'  # noqa
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _base_.segmenter_vit_host,
        arch='vit-s',
        img_size=crop_size,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=384, channels=384, embed_dims=384, num_heads=6, num_layers=2,
        num_classes=150))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0))
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
