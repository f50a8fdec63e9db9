# DVT on T2T-ViT-14 (Performer tokens-to-token tokenizer), 3 exits (7x7, 10x10, 14x14), feature +
# relationship reuse. The public code's T2T-ViT-14 command: 8 GPUs x 64, lr 5e-4 (no scaling),
# weight decay 0.05; everything else as the DeiT-S DVT recipe.
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
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05))
auto_scale_lr = dict(base_batch_size=512)
