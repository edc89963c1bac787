"""What a distillation trial reports, declared before it runs: the search checks its objectives and
constraints against these names before the first trial (``hydra.sweeper.metric_names``; recipe=autodistill
calls it in-process), and the trainer's device is checked once here rather than inside every trial."""

from __future__ import annotations

from typing import Any

from callbacks.latency import resolve_device
from modules.probe import probe_metric_names

# recipes/distill.py's metrics.json: the validation terms of modules/distillation.py (its last stage's loss mix;
# mha_last / fm_last: the last block's layer-wise terms; mlm_kd, mha and fm only under some loss settings: a name
# listed here may still be missing after a trial, which the search then reports), sizes, steps, wall time, teacher-cache counters and the measured latency.
VAL_TERMS = ("loss", "mlm", "nsp", "mlm_kd", "mha", "fm", "mha_last", "fm_last", "mlm_acc", "nsp_acc")
SIZES = ("params", "params_with_heads", "flops_per_seq@128", "steps", "wall_time_s")
CACHE = ("teacher_cache/hits", "teacher_cache/misses")
# With teacher.mlm_head=fit, unless the checkpoint has a trained head (mlm_head.MLMHeadFit.as_metrics).
FITTED_HEAD = ("teacher/mlm_head_acc", "teacher/mlm_head_unigram_acc")
LATENCY = ("p50_ms", "p50_spread", "p90_ms", "mean_ms", "std_ms", "cv", "throughput_seq_s", "peak_memory_mb",
           "noisy", "contended")  # callbacks.latency.LatencyResult.as_metrics  # fmt: skip


def distill_metric_names(cfg: Any) -> list[str]:
    """The metric names a flash / regular distillation with ``cfg`` reports (a superset: see VAL_TERMS).

    Args:
        cfg: the trial's composed config (a DictConfig or a RunConfig with a distillation recipe).
    Returns:
        The names, e.g. ``val/mlm_acc``, ``latency/p50_ms``, ``params``.
    Raises:
        RuntimeError: ``trainer.accelerator`` names a device this machine does not have (every trial would fail).
    """
    check_accelerator(str(cfg.trainer.accelerator))
    names = [f"val/{t}" for t in VAL_TERMS] + list(SIZES) + list(CACHE)
    if cfg.recipe.validate_before_training:
        names += [f"val_start/{t}" for t in VAL_TERMS]
    if cfg.recipe.measure_latency:
        names += [f"latency/{k}" for k in LATENCY]
    if cfg.teacher.mlm_head == "fit":
        names += list(FITTED_HEAD)
    if cfg.recipe.probe.max_train_examples > 0:  # modules/probe.py: probe/acc, probe/f1, probe/score, ... on the task group
        names += probe_metric_names(cfg.task)
    return names


def check_accelerator(accelerator: str) -> None:
    """Raises RuntimeError when the trainer's accelerator (gpu / cuda / mps) is not on this machine."""
    device = {"gpu": "cuda"}.get(accelerator, accelerator)
    if device in ("cuda", "mps"):
        try:
            resolve_device(device)
        except RuntimeError:
            raise RuntimeError(
                f"trainer.accelerator={accelerator} but this machine has no {device.upper()} device: every trial "
                "would fail; use trainer=cpu here, or run the search where the device is"
            ) from None
