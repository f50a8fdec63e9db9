# Benchmark only (not a training recipe): ./setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py
# with the token decisions forced (`decision_override`, the constructor form of
# `mmdyn.models.utils.override_decisions`), so that speed and FLOPs do not depend on the weights:
# the first decision (after block 2) keeps the least confident half of the patch tokens, the
# later ones stop nothing more. Compare with ./setr_vit-b_naive_8xb1-80k_cityscapes-768x768.py
# in tools/analysis_tools/benchmark.py (see README.md, "Speed").
_base_ = './setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py'
model = dict(backbone=dict(decision_override=dict(keep_ratios=(0.5, 0.5, 0.5))))
