# Static T2T-ViT-14 baseline (mmdyn's T2T-ViT host, 14x14 tokens at 224) with the recipe of
# dvt_t2t-vit-14_8xb64_in1k.py (lr 5e-4 for 8 x 64, weight decay 0.05, drop-path 0.1).
_base_ = '../baselines/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdyn.T2TViT',
        arch='t2t-vit-14',
        img_size=224,
        soft_split=(7, 4, 2),
        token_type='performer',
        drop_path_rate=0.1),
    head=dict(in_channels=384))

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
# no gradient clipping (the public DVT code's main.py: --clip-grad None); its T2T_ViT's own
# no_weight_decay() exempts the class token, as the base's custom_keys do
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05), clip_grad=None)
auto_scale_lr = dict(base_batch_size=512)
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
