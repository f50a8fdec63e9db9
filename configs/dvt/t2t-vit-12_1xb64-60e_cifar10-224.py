# Static T2T-ViT-12 fine-tuned on CIFAR-10 at 224 (the baseline rows of the paper's Table 3):
# the public T2T-ViT transfer recipe of dvt_t2t-vit-12_1xb64-60e_cifar10-224.py on the static
# host, started from the public code's ImageNet T2T-ViT-12 weights (put the release at the
# checkpoint path below; converted on load, see README; its 1000-class head is not loaded).
_base_ = './dvt_t2t-vit-12_1xb64-60e_cifar10-224.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=10,
        mean=[125.307, 122.961, 113.8575],
        std=[51.5865, 50.847, 51.255],
        to_rgb=False),
    backbone=dict(
        type='mmdyn.T2TViT',
        arch='t2t-vit-12',
        img_size=224,
        soft_split=(7, 4, 2),
        token_type='performer',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='work_dirs/pretrained/t2t-vit-12_in1k_official.pth.tar')),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

val_evaluator = dict(_delete_=True, type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
custom_hooks = []
find_unused_parameters = False
