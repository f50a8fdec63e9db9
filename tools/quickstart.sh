#!/usr/bin/env bash
# Dynamic versus static in a few minutes on a CPU (demo/dynamic_vs_static.py): installs whatever
# is missing, then trains a tiny PVT and the same host with dynamic grained encoders (DGE) on
# generated scenes and prints mIoU, realised GFLOPs and latency per image for both, with a
# picture of the learned decisions and a plot of mIoU against GFLOPs.
#   bash tools/quickstart.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WD=${1:-work_dirs/quickstart}
echo "[quickstart] installing what is missing (log: ${TMPDIR:-/tmp}/mmdyn_install.log)"
bash tools/install.sh > "${TMPDIR:-/tmp}/mmdyn_install.log" 2>&1 \
    || { cat "${TMPDIR:-/tmp}/mmdyn_install.log"; exit 1; }
"$PY" demo/dynamic_vs_static.py --work-dir "$WD"
