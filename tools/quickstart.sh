#!/usr/bin/env bash
# End to end on a CPU in a few minutes: generate an ADE20K-layout data set, train, validate
# (mIoU), save checkpoints, test the last one, and report the model's complexity.
#   bash tools/quickstart.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CFG=configs/_quickstart_/fpn_dge-pvt-tiny_1xb8-300iter_toy-ade20k-128x128.py
WD=${1:-work_dirs/quickstart}
"$PY" tools/dataset_converters/make_toy_dataset.py --layout ade20k --out data/toy_ade20k \
    --num 64 --num-val 16 --size 128 128 --seed 0
"$PY" tools/train.py "$CFG" --work-dir "$WD"
"$PY" tools/test.py "$CFG" "$WD/iter_300.pth" --work-dir "$WD"
if [ -f tools/analysis_tools/get_flops.py ]; then
  "$PY" tools/analysis_tools/get_flops.py "$CFG" --checkpoint "$WD/iter_300.pth" --num-images 16
fi
