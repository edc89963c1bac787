"""A cheap synthetic objective for the sweeper tests: a Hydra app whose metrics are a pure function of
the proposed student (no training), that can be told to fail, return NaN, or take its time."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def blocks_of(student) -> list:
    return list(student.blocks) if student.blocks else [student.block] * int(student.num_blocks)


def params_of(student) -> float:
    return float(
        sum(b.hidden_size * (b.bottleneck_size + b.intermediate_size * b.num_ffn) for b in blocks_of(student))
    )


def synthetic_metrics(student) -> dict[str, float]:
    """Accuracy grows with width and depth of the FFNs; latency grows with them too: a real trade-off."""
    acc = lat = 0.0
    for b in blocks_of(student):
        acc += (
            0.1 * math.log2(b.hidden_size / 64) + 0.03 * b.num_ffn + 0.01 * math.log2(b.bottleneck_size / 32)
        )
        lat += b.hidden_size * b.num_ffn * b.intermediate_size / 1e5 + b.bottleneck_size * b.num_heads / 400
    acc = acc / len(blocks_of(student))  # val/loss: a loss falling as accuracy rises (the project's default objective)
    return {"val/mlm_acc": acc, "val/loss": 1.0 - acc, "latency/p50_ms": lat, "params": params_of(student)}


def pretrial(cfg: DictConfig, names: set[str]) -> dict[str, float]:
    return {"params": params_of(cfg.student)}


def metric_names(cfg: DictConfig) -> list[str]:
    """What every trial of this app returns (hydra.sweeper.metric_names)."""
    return ["val/mlm_acc", "val/loss", "latency/p50_ms", "params"]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    calls = Path(cfg.calls_dir)
    calls.mkdir(parents=True, exist_ok=True)
    record = {
        "job": HydraConfig.get().job.num,
        "student": OmegaConf.to_container(cfg.student),
        "sleep_s": cfg.sleep_s,
        "seed": cfg.seed,
        "dir": HydraConfig.get().runtime.output_dir,
    }
    (calls / f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(record))
    time.sleep(cfg.sleep_s)
    heads = blocks_of(cfg.student)[0].num_heads
    if heads == cfg.fail_heads:
        raise RuntimeError("synthetic failure")
    metrics = synthetic_metrics(cfg.student)
    if heads == cfg.nan_heads:
        metrics["val/mlm_acc"] = float("nan")
    return metrics


if __name__ == "__main__":
    main()
