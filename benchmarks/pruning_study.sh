#!/usr/bin/env bash
# The README's "Pruning" table: each method end to end on the offline MiniLM teacher and the sentiment task, at a
# small demo budget. Every stage is a plain run.py command; a finished stage (metrics.json) is skipped on a rerun.
#   bash benchmarks/pruning_study.sh [out dir, default outputs/pruning]  ->  python -m reports.pruning <out dir>
set -euo pipefail
OUT=${1:-outputs/pruning}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-30}   # optimizer steps of each pruning stage on the corpus (batch 16 x 64 tokens)
FT=(recipe=finetune recipe.epochs=1 recipe.max_steps=${FT_STEPS:-60} recipe.optimizer.lr=1e-4)  # the teacher's budget
# The machine is shared: no waiting for a quiet CPU, one cached reading per architecture (dense kernels do not see
# zeros, so every unstructured model shares the teacher's); benchmarks/pruning_sparse.py times ratios side by side.
SHARED=(latency.max_other_load=null latency.max_cv=10 latency.max_retries=0 latency.warmup=3 latency.repeats=20
        latency.cache_path="$OUT/latency.json" trainer.enable_progress_bar=false data.batch_size=16 data.val_size=128)

stage() {  # stage <dir> <overrides...>: run once, time it
  local dir=$1; shift
  [[ -f $OUT/$dir/metrics.json ]] && return 0
  local t0=$SECONDS; mkdir -p "$OUT/$dir"
  $PY run.py "$@" "${SHARED[@]}" hydra.run.dir="$OUT/$dir" > "$OUT/$dir.log" 2>&1 || { tail -30 "$OUT/$dir.log"; exit 1; }
  echo "$dir: $((SECONDS - t0)) s"
}
prune_then_finetune() {  # <name> <prune overrides...>
  local name=$1; shift
  stage "$name/prune" recipe=prune recipe.regular_steps="$STEPS" "$@"
  stage "$name/finetune" "${FT[@]}" recipe.model="$OUT/$name/prune/student"
}
mkdir -p "$OUT"
stage teacher/finetune "${FT[@]}" recipe.model=teacher
MAG=(recipe.method=magnitude recipe.schedule.end_fraction=0.5 recipe.schedule.frequency=5)
prune_then_finetune magnitude_50 "${MAG[@]}" recipe.sparsity=0.5
prune_then_finetune rpp_lam0.9 recipe.method=rpp recipe.rpp.lam=0.9 recipe.rpp.reweight_every=10
stage nip_50/finetune "${FT[@]}" recipe.model=teacher recipe.sparsity.nip=0.5 recipe.sparsity.nip_schedule.end_fraction=0.5 recipe.sparsity.nip_schedule.frequency=5
prune_then_finetune structured_50 recipe.method=structured recipe.structured.heads=0.5 recipe.structured.ffn=0.5
prune_then_finetune rpp_lam4 recipe.method=rpp recipe.rpp.lam=4.0 recipe.rpp.reweight_every=10
stage nip_80/finetune "${FT[@]}" recipe.model=teacher recipe.sparsity.nip=0.8 recipe.sparsity.nip_schedule.end_fraction=0.5 recipe.sparsity.nip_schedule.frequency=5
prune_then_finetune magnitude_80 "${MAG[@]}" recipe.sparsity=0.8
