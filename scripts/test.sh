#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the test suite. Extra arguments go to pytest
# (e.g. `bash scripts/test.sh -m slow` for the tests on the real offline assets).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test; that is a broken selection, not a pass, so say it loudly.
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): check the -m/-k selection" >&2
  exit 1
fi
exit "$rc"
