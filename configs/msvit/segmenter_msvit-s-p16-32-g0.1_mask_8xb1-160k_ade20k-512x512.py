# MSSeg-S/16 with the frozen gate of the ImageNet MSViT-S/16,32 model trained with g* = 0.1
# (msvit-s-p16-32_gbas-ctr-g0.1-w4_1xb512-20e_in1k.py); otherwise the g* = 0.5 config.
_base_ = './segmenter_msvit-s-p16-32-g0.5_mask_8xb1-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        target=0.1,
        gate_checkpoint='work_dirs/msvit-s-p16-32_gbas-ctr-g0.1-w4_1xb512-20e_in1k/epoch_20.pth'))
