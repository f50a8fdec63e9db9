# Static baseline (and DoViT teacher): Segmenter (mask transformer, 2 layers) ViT-B/16 on
# Cityscapes, 768x768, 80k iterations, 8 GPUs x 2 images (the authors' static Segmenter
# teachers set 2 images per GPU, their "8x1" names aside). Segmenter's model settings with the
# Cityscapes 768 data and schedule as the public DoViT Segmenter-Cityscapes configs have them:
# the Cityscapes data's ImageNet mean / std (those configs set no normalisation of their own,
# unlike their ADE20K ones' 127.5), SGD lr 1e-2, no weight decay, slide test 768/512; mmdyn's
# ViT-B host initialised from mmseg's ViT-B/16-384 checkpoint.
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/datasets/cityscapes_768x768.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py', './_base_/vit-hosts.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

crop_size = (768, 768)
data_preprocessor = dict(size=crop_size, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375])
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_base_p16_384_20220308-96dfe169.pth'  # noqa
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _base_.segmenter_vit_host,
        arch='vit-b',
        img_size=crop_size,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
