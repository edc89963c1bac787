"""The student search's pre-trial hook: a proposal's size, FLOPs and measured latency, known without
training it, so that hard constraints reject it before any training (``hydra.sweeper.pretrial``)."""

from __future__ import annotations

from typing import Any

from callbacks.latency import measure_latency
from modules.student import StudentConfig
from modules.student_costs import flops, num_parameters


def architecture_metrics(cfg: Any, names: set[str]) -> dict[str, float]:
    """Metrics of a trial's student known without training it: what a search's hard constraints read.

    ``cfg`` is the trial's composed config (a DictConfig or a RunConfig). Gives ``params``,
    ``params_with_heads``, ``flops_per_seq@128``, and, when a ``latency/*`` name is asked for, the latency of
    a fresh build on ``latency.device`` (cached, so the trial's own measurement is then a cache hit). A latency
    still contended after ``measure_latency``'s retries is left out: a busy machine must not reject a proposal,
    so its latency constraints are checked on the trial's own measurement after training.

    Args:
        cfg: the trial's composed config (DictConfig or RunConfig).
        names: the constraint metrics the search asks for.
    Returns:
        {metric name: value}.
    Raises:
        ValueError: an impossible student (the search records it as infeasible).
    """
    from omegaconf import DictConfig, OmegaConf

    from callbacks.latency import LatencyConfig
    from modules.student_spec import StudentSpec

    student = OmegaConf.to_object(cfg.student) if isinstance(cfg, DictConfig) else cfg.student
    if not isinstance(student, StudentSpec):
        student = StudentSpec(**student)
    vocab_size = student.vocab_size or _teacher_vocab_size(
        str(cfg.teacher.name_or_path), cfg.teacher.revision
    )
    config = StudentConfig.from_spec(student, vocab_size=vocab_size)
    out = {
        "params": num_parameters(config),
        "params_with_heads": num_parameters(config, "pretraining"),
        "flops_per_seq@128": flops(config, seq_len=128),
    }
    if any(n.startswith("latency/") for n in names):
        latency = OmegaConf.to_object(cfg.latency) if isinstance(cfg, DictConfig) else cfg.latency
        if not isinstance(latency, LatencyConfig):
            latency = LatencyConfig(**latency)
        # a contended reading comes back flagged: the search's invalid_if makes it reject nothing
        out.update(measure_latency(config, latency).as_metrics())
    return out


def _teacher_vocab_size(name_or_path: str, revision: str | None) -> int:
    """The teacher's vocabulary size (a student without its own takes the teacher's), from its config alone."""
    from transformers import AutoConfig

    from core.assets import is_local_path, resolve_path

    path = str(resolve_path(name_or_path)) if is_local_path(name_or_path) else name_or_path  # else a hub id
    return AutoConfig.from_pretrained(path, revision=revision).vocab_size


