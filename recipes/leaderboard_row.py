"""One leaderboard row: a cell's final model measured the same way for every method (recipes/leaderboard.py).

Why measured here rather than read from the stages: each recipe reports its own subset (a pipeline measures its
students in a run of its own, fine-tuning may skip latency), and a fair table needs every number taken by one
procedure, on one device, in one run: params counted from the saved model, FLOPs by PyTorch's own
``FlopCounterMode`` (one counter for every architecture: BERT layers, bottleneck blocks, AdaBERT's CNN cells),
latency by ``measure_latency`` with the run's ``latency`` group at batch 1 and at the serving batch.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification

import modules.auto  # noqa: F401  (registers the students' and AdaBERT's Auto classes)
from callbacks.latency import measure_latency
from modules.finetuning import task_score
from recipes.config import RunConfig
from recipes.leaderboard_config import LeaderboardConfig
from recipes.methods import Method

log = logging.getLogger(__name__)


def find_model(cell: Path, meth: Method) -> Path:
    """The cell's final model dir: the last stage's ``model`` glob inside its dir.

    Raises:
        FileNotFoundError: nothing matches (the stage did not save a model).
    """
    last = meth.stages[-1]
    found = sorted(glob.glob(str(cell / last.name / last.model)))
    if not found:
        raise FileNotFoundError(f"leaderboard cell {cell}: no model at {last.name}/{last.model}")
    return Path(found[0])


def scores(metrics: dict[str, float], split: str) -> float | None:
    """The task score (×100, the mean of the task's metrics) on ``split`` ("test" or "val"), or None."""
    if f"{split}/score" in metrics:
        return metrics[f"{split}/score"]
    values = {k.split("/", 1)[1]: v for k, v in metrics.items()
              if k.startswith(f"{split}/") and k.split("/", 1)[1] in ("acc", "f1", "mcc", "pearson", "spearmanr")}  # fmt: skip
    return task_score(values) if values else None


def count_flops(model: torch.nn.Module, vocab_size: int, seq_len: int) -> float:
    """Forward FLOPs of one sequence of ``seq_len`` tokens (2 per multiply-accumulate), by ``FlopCounterMode``."""
    ids = torch.randint(1, vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return float(counter.get_total_flops())


def embedding_params(model: torch.nn.Module) -> int:
    """Parameters of the embedding tables (every ``nn.Embedding``; a tied decoder is not counted twice)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())


def measure_row(
    cfg: RunConfig, recipe: LeaderboardConfig, meth: Method, seed: int, cell: Path, stage_metrics: list[dict]
) -> dict[str, Any]:
    """The row of one cell: its scores (from the stage that produced the model) and its costs, measured now.

    Returns:
        method, seed, model dir, ``test_score`` / ``val_score`` (×100), ``params``, ``params_nonzero`` (those not
        exactly zero: what a pruned model really stores), ``params_nonembedding``,
        ``size_mb`` (the saved weights' bytes / 1e6), ``gflops`` (per sequence at ``latency.seq_len``),
        ``p50_ms`` (batch 1), ``p50_ms_serving`` and ``throughput`` (sequences / s at the serving batch),
        ``latency_contended`` (1 when a timing ran on a busy CPU), ``wall_time_s`` (the cell's stages, summed).
    """
    model_dir = find_model(cell, meth)
    metrics_path = model_dir.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else stage_metrics[-1]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    params = sum(p.numel() for p in model.parameters())
    single = measure_latency(model, cfg.latency)
    serving = measure_latency(model, replace(cfg.latency, batch_size=recipe.serving_batch_size))
    return {
        "method": meth.name,
        "seed": seed,
        "model_dir": str(model_dir),
        "test_score": scores(metrics, "test"),
        "val_score": scores(metrics, "val"),
        "params": params,
        "params_nonzero": sum(int((p != 0).sum()) for p in model.parameters()),  # sparse-aware (pruned methods)
        "params_nonembedding": params - embedding_params(model),
        "size_mb": sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6,
        "gflops": count_flops(model, model.config.vocab_size, cfg.latency.seq_len) / 1e9,
        "p50_ms": single.p50_ms,
        "p50_ms_serving": serving.p50_ms,
        "throughput": serving.throughput_seq_s,
        "latency_contended": float(bool(single.contended or serving.contended)),
        "wall_time_s": sum(m.get("wall_time_s", 0.0) for m in stage_metrics),
    }
