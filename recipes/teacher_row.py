"""recipe=autodistill's teacher row: its size, FLOPs and latency, measured once per run dir, and the search's
latency bound derived from it (``recipe.speedup_target``: target 1 of the default run as a constraint)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from callbacks.latency import measure_latency
from core.files import write_json_atomic
from hydra_plugins.pareto_sweeper import ConstraintConfig
from modules.student import StudentConfig
from modules.student_costs import flops
from modules.student_spec import BlockSpec, StudentSpec
from modules.teacher import load_teacher
from recipes.config import RunConfig
from search.config import StudentSearchConfig

log = logging.getLogger(__name__)


def teacher_once(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The teacher's row (``teacher_metrics`` + its name), measured once per run dir and kept in
    <run dir>/teacher.json: a resumed pipeline reuses it, so the search's latency bound stays the same."""
    path = run_dir / "teacher.json"
    if path.exists():
        return json.loads(path.read_text())
    row = {"name": cfg.teacher.name_or_path, **teacher_metrics(cfg)}
    write_json_atomic(path, row, indent=2)
    return row


def with_speed_target(
    search_cfg: StudentSearchConfig, teacher_row: dict[str, Any], speedup_target: float | None
) -> StudentSearchConfig:
    """``search_cfg`` plus the constraint ``latency/p50_ms <= teacher p50 / speedup_target`` (ms, this machine).

    Unchanged without a target, or when the teacher's latency was timed on a busy CPU (``latency/contended``:
    a bound from it would be wrong; logged)."""
    p50 = teacher_row.get("latency/p50_ms")
    if speedup_target is None or p50 is None:
        return search_cfg
    if teacher_row.get("latency/contended"):
        log.warning("the teacher's latency was timed on a busy CPU: recipe.speedup_target=%g is not applied",
                    speedup_target)  # fmt: skip
        return search_cfg
    bound = ConstraintConfig("latency/p50_ms", max=round(p50 / speedup_target, 3))
    log.info("search: students slower than %.3f ms (the teacher's %.2f ms / %g) are not trained",
             bound.max, p50, speedup_target)  # fmt: skip
    return dataclasses.replace(search_cfg, constraints=[*search_cfg.constraints, bound])


def teacher_metrics(cfg: RunConfig) -> dict[str, float]:
    """The teacher's row: size, FLOPs (as the equivalent BERT-layer student, exact), measured latency."""
    teacher = load_teacher(cfg.teacher)
    c = teacher.config
    as_student = StudentConfig.from_spec(StudentSpec(
        num_blocks=c.num_hidden_layers,
        block=BlockSpec(c.hidden_size, c.hidden_size, c.num_attention_heads, c.intermediate_size, 1),
        max_position_embeddings=c.max_position_embeddings,
    ), vocab_size=c.vocab_size)
    latency = measure_latency(teacher.encoder, cfg.latency)
    return {
        "params": float(sum(p.numel() for p in teacher.encoder.parameters())),
        "flops_per_seq@128": float(flops(as_student, seq_len=128)),
        **latency.as_metrics(),
    }
