# Loss ablation (paper Fig. 6): MSViT-S/16,32 with generalized batch-shaping without centre initialisation (Eq. 9); g* = 0.5, lambda = 4.
# Compare with ./msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py (GBaS + centre init).
_base_ = './msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py'
model = dict(backbone=dict(gate_loss=dict(_delete_=True, type='gbas', center_init=False, temperature=0.3, hyperprior_std=0.1)))
