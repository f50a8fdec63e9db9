# DiT-B2 with deterministic routing for speed and cost checks (issue item 9), not for training:
# no gate runs; every reached stage computes the same evenly spaced half of its tokens
# (`decision_override.keep_ratio`) and the column paths are fixed (`columns`: 'pvt' = the PVTv2
# staircase only, so the other stages are pruned; 'all' = every column path). The same override
# as `mmdyn.models.utils.override_decisions(model, keep_ratio=0.5, columns='pvt')` on a built
# model. Timed against pvtv2-b2_8xb128_in1k.py (same code path as PVTv2 when keep_ratio=1.0) by
# tools/analysis_tools/benchmark.py; commands in README.md ("Speed").
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(decision_override=dict(keep_ratio=0.5, columns='pvt')))
