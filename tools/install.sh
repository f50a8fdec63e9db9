#!/usr/bin/env bash
# Install mmdyn and the OpenMMLab 2.0 stack it builds on into the current Python.
#
#   bash tools/install.sh            (uses `python`; set PYTHON=... to choose another)
#
# Idempotent: when everything below is already installed (tools/misc/check_install.py) it
# returns in seconds without calling pip. What it changes (all in that one Python environment):
#   * torch 2.13.0 + torchvision 0.28.0: only if `import torchvision` with its ops fails.
#     A working torch/torchvision pair of any version is left alone.
#   * setuptools<82, wheel, ninja (mmcv's build and mmengine's `mmdet::` config bases need
#     pkg_resources, which setuptools 82 removed).
#   * numpy<2, opencv-python-headless, mmengine 0.10.7, mmcv 2.1.0 with compiled ops (built from
#     source when no wheel fits: about 10 minutes on 2 cores, cached by pip afterwards; skipped
#     when mmcv 2.1.0 with ops is already importable), mmdet 3.3.0, mmsegmentation 1.2.2,
#     mmpretrain 1.2.0, ftfy, regex, the test requirements, and mmdyn in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PIP=("$PY" -m pip)
C=(-c requirements/constraints.txt)
say() { printf '\n[mmdyn install] %s\n' "$*"; }

tv_ok() {
  "$PY" - <<'PYEOF' 2>/dev/null
import torch, torchvision
from torchvision.ops import nms
nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
PYEOF
}
mmcv_ok() {
  "$PY" -c 'import mmcv, mmcv.ops, sys; sys.exit(0 if mmcv.__version__ == "2.1.0" else 1)' 2>/dev/null
}

# Everything already there (the pinned versions, compiled ops, mmdyn editable from here)?
# Then nothing to do: a few seconds instead of a minute of pip resolving.
if "$PY" tools/misc/check_install.py; then
  say "everything is installed (tools/misc/check_install.py): nothing to do"
  exit 0
fi

say "build tools"
"${PIP[@]}" install -q "${C[@]}" -r requirements/build.txt

if tv_ok; then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') with a working torchvision found: left as it is"
else
  # No CPU build of torchvision exists. The registry's torch/torchvision pair runs on CPU-only
  # machines too. `--isolated` ignores pip config/env: a machine whose pip config points at a
  # local CPU-only torch wheel would otherwise get a torch that this torchvision cannot load.
  iso=()
  if "${PIP[@]}" config list 2>/dev/null | grep -q 'find-links' || [ -n "${PIP_FIND_LINKS:-}" ]; then
    iso=(--isolated)
    [ -n "${PIP_CERT:-}" ] && iso+=(--cert "$PIP_CERT")
  fi
  if "$PY" -c 'import torch, sys; sys.exit(0 if "+cpu" in torch.__version__ else 1)' 2>/dev/null; then
    say "replacing CPU-only torch (no torchvision can load next to it)"
    "${PIP[@]}" uninstall -y torch torchvision >/dev/null 2>&1 || true
  fi
  say "torch 2.13.0 + torchvision 0.28.0"
  "${PIP[@]}" install "${iso[@]}" torch==2.13.0 torchvision==0.28.0 setuptools'<82' 'numpy<2'
  tv_ok || { echo "[mmdyn install] torchvision still does not load; see README 'Install'" >&2; exit 1; }
fi

say "numpy, opencv (headless), mmengine"
"${PIP[@]}" install -q "${C[@]}" 'numpy<2' opencv-python-headless addict matplotlib pyyaml rich termcolor yapf
# mmengine 0.10.7 declares the GUI opencv-python; the headless build is what it needs here.
"${PIP[@]}" install -q "${C[@]}" --no-deps mmengine==0.10.7

if mmcv_ok; then
  say "mmcv 2.1.0 with ops found: left as it is"
else
  say "mmcv 2.1.0 with compiled ops (built from source if pip has no cached wheel: ~10 min)"
  # --no-deps: its dependencies are installed above; through mmengine it would drag in the GUI
  # opencv-python (and, with numpy<2, a long backtrack over its versions).
  "${PIP[@]}" install -q "${C[@]}" packaging Pillow
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install "${C[@]}" --no-build-isolation --no-deps mmcv==2.1.0
fi

say "mmdet, mmsegmentation, mmpretrain, runtime and test requirements"
"${PIP[@]}" install -q "${C[@]}" -r requirements/mminstall.txt -r requirements/runtime.txt -r requirements/tests.txt

say "mmdyn (editable)"
"${PIP[@]}" install -q "${C[@]}" --no-build-isolation --no-deps -e .

"$PY" -c "import mmdyn, mmdet.models, mmseg.models, mmpretrain.models, mmcv.ops; print('[mmdyn install] OK: mmdyn', mmdyn.__version__)"
