"""The two results the default pipeline exists to show, judged against their targets (issue 14), for the first
lines of report.md and for metrics.json:

1. a student at least ``min_speedup`` x faster than the teacher (p50 latency at batch 1, measured on this
   machine) whose downstream score is at least ``min_score_ratio`` of the fine-tuned teacher's;
2. a student whose advantage over the MobileBERT-shaped baseline is larger than the noise: faster at an equal
   score, or better at an equal latency, where "equal" means within the noise floor.

Noise floors used here (each documented where it is computed):
- latency: the larger of the two models' own round spread (``latency/p50_spread``, relative; x p50 -> ms);
- downstream score: one standard error of the difference of two accuracies measured on the same ``n``
  examples, ``100 * sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)`` (scores in percent). It covers the finite
  evaluation set, not the seed-to-seed spread of fine-tuning, which the pipeline does not repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIN_SPEEDUP = 3.0
MIN_SCORE_RATIO = 0.9


@dataclass
class Model:
    """One row of the comparison: a name, its measured p50 (ms) and round spread (ms), its downstream
    score (percent) and the number of examples that score was measured on."""

    label: str
    p50_ms: float | None
    spread_ms: float
    score: float | None
    examples: int | None


@dataclass
class SpeedScoreCheck:
    """Result 1. ``best``: the fastest student meeting both targets, else the one closest to them (the highest
    score among students at least ``min_speedup`` x faster, else the fastest); None when no student has both a
    latency and a score."""

    best: Model | None
    speedup: float | None  # teacher p50 / student p50
    score_ratio: float | None  # student score / teacher score
    met: bool


@dataclass
class BaselineCheck:
    """Result 2 for one student against the baseline: the differences (positive = the student is better) and
    their noise floors; ``verdict``: ``better`` (ahead beyond the noise on one axis, not behind beyond it on
    the other), ``worse`` (the reverse), ``trade-off`` (ahead on one, behind on the other) or ``indistinguishable``."""

    student: Model
    faster_ms: float
    score_gain: float
    latency_floor_ms: float
    score_floor: float
    verdict: str


def model_row(label: str, latency: dict[str, float], downstream: dict[str, float]) -> Model:
    """A ``Model`` from a stage's latency metrics (``latency/*``; contended timings count as missing) and its
    fine-tuning metrics (``test/score`` where the test split has labels, else ``val/score``; the row counts
    ``test_examples`` / ``validation_examples`` that recipe=finetune writes)."""
    p50 = latency.get("latency/p50_ms")
    if p50 is not None and (latency.get("latency/contended") or math.isnan(p50)):
        p50 = None
    spread = (latency.get("latency/p50_spread") or 0.0) * (p50 or 0.0)
    split, rows = ("test", "test_examples") if "test/score" in downstream else ("val", "validation_examples")
    examples = downstream.get(rows)
    return Model(label, p50, spread, downstream.get(f"{split}/score"), int(examples) if examples else None)


def rows_from(candidates: list[Any], teacher: dict[str, Any]) -> tuple[list[Model], Model | None, Model]:
    """The students, the baseline (None without one) and the teacher as ``Model`` rows, from the pipeline's
    candidates (``label``, ``regular`` / ``flash`` metrics with ``latency/*``, ``downstream`` metrics) and the
    teacher's row (``latency/*`` and ``downstream``)."""
    rows = {c.label: model_row(c.label, c.regular or c.flash, c.downstream) for c in candidates}
    baseline = rows.pop("baseline", None)
    return list(rows.values()), baseline, model_row("teacher", teacher, teacher.get("downstream", {}))


def score_floor(a: Model, b: Model) -> float:
    """One standard error (percent points) of the difference of two accuracies on ``n`` examples each
    (module docstring); 0 when either count is unknown."""
    if a.score is None or b.score is None or not a.examples or not b.examples:
        return 0.0
    p, q = a.score / 100.0, b.score / 100.0
    return 100.0 * math.sqrt(p * (1 - p) / a.examples + q * (1 - q) / b.examples)


def speed_score_check(
    students: list[Model], teacher: Model, min_speedup: float = MIN_SPEEDUP, min_score_ratio: float = MIN_SCORE_RATIO
) -> SpeedScoreCheck:
    """Result 1 (module docstring) over ``students``; see ``SpeedScoreCheck`` for which one is reported."""
    usable = [s for s in students if s.p50_ms and s.score is not None]
    if not usable or not teacher.p50_ms or not teacher.score:
        return SpeedScoreCheck(None, None, None, False)

    def ratios(s: Model) -> tuple[float, float]:
        return teacher.p50_ms / s.p50_ms, s.score / teacher.score

    meeting = [s for s in usable if ratios(s)[0] >= min_speedup and ratios(s)[1] >= min_score_ratio]
    fast = [s for s in usable if ratios(s)[0] >= min_speedup]
    if meeting:
        best = max(meeting, key=lambda s: ratios(s)[0])
    elif fast:
        best = max(fast, key=lambda s: s.score)
    else:
        best = min(usable, key=lambda s: s.p50_ms)
    speedup, ratio = ratios(best)
    return SpeedScoreCheck(best, speedup, ratio, bool(meeting))


def baseline_check(student: Model, baseline: Model) -> BaselineCheck | None:
    """Result 2 for one student (module docstring); None when either lacks a latency or a score."""
    if None in (student.p50_ms, baseline.p50_ms, student.score, baseline.score):
        return None
    faster = baseline.p50_ms - student.p50_ms
    gain = student.score - baseline.score
    lat_floor = max(student.spread_ms, baseline.spread_ms)
    sc_floor = score_floor(student, baseline)
    ahead = (faster > lat_floor, gain > sc_floor)  # beyond the noise, per axis
    behind = (faster < -lat_floor, gain < -sc_floor)
    if any(ahead) and not any(behind):
        verdict = "better"
    elif any(behind) and not any(ahead):
        verdict = "worse"
    elif any(ahead):
        verdict = "trade-off"  # faster but worse, or better but slower: neither dominates
    else:
        verdict = "indistinguishable"
    return BaselineCheck(student, faster, gain, lat_floor, sc_floor, verdict)


def target_lines(students: list[Model], baseline: Model | None, teacher: Model) -> list[str]:
    """The report's first lines: each result against its target, in plain words."""
    first = speed_score_check(students, teacher)
    lines = []
    if first.best is None:
        lines.append("- **≥ 3× faster than the teacher at ≥ 90% of its score: not measured** (no student has both a "
                     "measured latency and a downstream score)")  # fmt: skip
    else:
        status = "met" if first.met else "NOT met"
        lines.append(
            f"- **≥ {MIN_SPEEDUP:g}× faster than the teacher at ≥ {MIN_SCORE_RATIO:.0%} of its score: {status}** — "
            f"{first.best.label}: {first.speedup:.2f}× faster ({first.best.p50_ms:.2f} vs {teacher.p50_ms:.2f} ms p50), "
            f"score {first.best.score:.2f} = {first.score_ratio:.1%} of the teacher's {teacher.score:.2f}"
        )
    checks = [c for s in students if baseline and (c := baseline_check(s, baseline))]
    if baseline is None or not checks:
        lines.append("- **advantage over the MobileBERT-shaped baseline: not measured** (no baseline with a latency "
                     "and a score)")  # fmt: skip
        return lines
    order = ("better", "trade-off", "indistinguishable", "worse")
    shown = min(checks, key=lambda c: order.index(c.verdict))
    status = {"better": "beyond the noise", "indistinguishable": "NOT beyond the noise",
              "trade-off": "NONE (a trade-off: neither dominates beyond the noise)", "worse": "NONE: the baseline is better"}
    lines.append(
        f"- **advantage over the baseline: {status[shown.verdict]}** — {shown.student.label}: "
        f"{shown.faster_ms:+.2f} ms faster (noise floor {shown.latency_floor_ms:.2f} ms), "
        f"{shown.score_gain:+.2f} score points (noise floor {shown.score_floor:.2f})"
    )
    return lines


def target_metrics(students: list[Model], baseline: Model | None, teacher: Model) -> dict[str, Any]:
    """metrics.json entries: ``target/speedup``, ``target/score_ratio``, ``target/met`` (1/0), and
    ``target/beats_baseline`` (1 beyond the noise, 0 otherwise)."""
    first = speed_score_check(students, teacher)
    out: dict[str, Any] = {"target/met": float(first.met)}
    if first.best is not None:
        out["target/speedup"] = first.speedup
        out["target/score_ratio"] = first.score_ratio
    checks = [c for s in students if baseline and (c := baseline_check(s, baseline))]
    out["target/beats_baseline"] = float(any(c.verdict == "better" for c in checks))
    return out
