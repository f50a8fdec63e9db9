#!/usr/bin/env bash
# The whole test suite on a fresh machine: install whatever is missing (tools/install.sh is
# idempotent: seconds when everything is there), then run pytest on two workers (the tests that
# run several processes at once share one worker, see their xdist_group; the longest modules
# start first, see tests/conftest.py LONG_FIRST). Extra arguments go to pytest,
# e.g. `bash tools/run_tests.sh tests/test_tools -x`. MMDYN_TEST_WORKERS=0 runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
bash tools/install.sh
"$PY" -m pytest -q -n "${MMDYN_TEST_WORKERS:-2}" --dist loadgroup "$@"
