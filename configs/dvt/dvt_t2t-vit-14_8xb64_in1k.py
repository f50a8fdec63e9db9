# DVT on T2T-ViT-14 (Performer tokens-to-token tokenizer), 3 exits (7x7, 10x10, 14x14), feature +
# relationship reuse. The public code's T2T-ViT-14 command: 8 GPUs x 64, lr 5e-4 (no scaling),
# weight decay 0.05, AMP; everything else as the DeiT-S DVT recipe.
_base_ = './dvt_deit-s_8xb128_in1k.py'

model = dict(
    host='t2t',
    # the T2T exits' grids come from their first soft split (not the DeiT tokenizers of the base)
    exits=[7, 10, 14],
    arch='t2t-vit-14',
    img_size=224,
    thresholds_file='work_dirs/dvt_t2t-vit-14_8xb64_in1k/thresholds.json',
    backbone_cfg=dict(_delete_=True, drop_path_rate=0.1, token_dims=64,
                      token_type='performer'))

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05), type='AmpOptimWrapper')
auto_scale_lr = dict(base_batch_size=512)
# The public code's schedule (timm's, main.py): linear warm-up over 20 epochs from lr 1e-6, a
# cosine to 1e-5 at epoch 300, then 10 cool-down epochs at 1e-5 (its loop runs 310 epochs);
# 1e-6 is 2e-3 x lr here
param_scheduler = [
    dict(type='LinearLR', start_factor=2e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300)]
train_cfg = dict(max_epochs=310)
