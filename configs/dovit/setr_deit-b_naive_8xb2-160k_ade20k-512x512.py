# Static baseline (and DoDeiT teacher): SETR-Naive DeiT-B/16 on ADE20K, 512x512, 160k iterations;
# as ./setr_vit-b_naive_8xb2-160k_ade20k-512x512.py with DeiT-B weights.
_base_ = './setr_vit-b_naive_8xb2-160k_ade20k-512x512.py'

model = dict(backbone={{_base_.setr_deit_b_host}})
