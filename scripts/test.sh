#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the test suite CI runs: the unit and smoke tiers (`-m "not slow"`).
# Extra arguments go to pytest after it, so a -m of yours wins (e.g. `bash scripts/test.sh -m slow` for the tests
# on the real offline assets). `.venv/bin/python -m pytest` alone runs the unit tier only (pyproject.toml).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -m "not slow" "$@"
rc=$?
# pytest exits 5 when it collected no test; that is a broken selection, not a pass, so say it loudly.
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): check the -m/-k selection" >&2
  exit 1
fi
exit "$rc"
