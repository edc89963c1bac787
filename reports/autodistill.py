"""recipe=autodistill's report: report.md (params, FLOPs, measured latency, MLM accuracy flash and regular,
task score, against the baseline and the teacher), the flash-vs-regular rank agreement (Kendall tau,
AutoDistill §4.7), the plots, and the summary metrics of the run."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.files import write_text_atomic
from hydra_plugins.pareto_sweeper import SearchConfig, SearchResult
from reports.degenerate import FOOTNOTE, degenerate, flagged, score_prefix
from reports.sweep_table import latency_cell, measured_latency, save_figure


@dataclass
class Candidate:
    """A student carried through the pipeline: its search record, and its regular-distillation metrics."""

    label: str  # "baseline" or "trial <n>"
    name: str
    flash: dict[str, float]
    regular: dict[str, float] = field(default_factory=dict)
    downstream: dict[str, float] = field(default_factory=dict)


def downstream_score(metrics: dict[str, float]) -> float | None:
    """The downstream number the report shows: the test score where the test split has labels, else best dev."""
    return metrics.get("test/score", metrics.get("val/score"))


def flash_fidelity(candidates: list[Candidate]) -> float:
    """Kendall tau between flash and regular MLM accuracy over the regular-distilled students (§4.7)."""
    from scipy import stats

    pairs = [(c.flash.get("val/mlm_acc"), c.regular.get("val/mlm_acc")) for c in candidates]
    pairs = [(f, r) for f, r in pairs if f is not None and r is not None]
    if len(pairs) < 2:
        return float("nan")
    return float(stats.kendalltau(*zip(*pairs)).statistic)


def summary_metrics(
    result: SearchResult, candidates: list[Candidate], teacher_row: dict, tau: float, wall: float
) -> dict[str, float]:
    """The run's metrics.json: the search's counts and hypervolume, tau, each candidate's regular and
    downstream numbers, the teacher's downstream score, the wall time (s)."""
    trials = [r for r in result.records if r.kind == "trial"]
    out = {
        "search/trials": len(trials),
        "search/ok": sum(r.status == "ok" for r in trials),
        "search/failed": sum(r.status == "failed" for r in trials),
        "search/infeasible": sum(r.status == "infeasible" for r in trials),
        "search/unmeasured": sum(r.status == "unmeasured" for r in trials),
        "search/front_size": len(result.front),
        "search/hypervolume": result.hypervolume,
        "flash_fidelity/kendall_tau": tau,
        "wall_time_s": wall,
    }
    for c in candidates:
        key = c.label.replace(" ", "_")
        for name in ("val/mlm_acc", "params"):
            if name in c.regular:
                out[f"{key}/{name}"] = c.regular[name]
        if measured_latency(c.regular) is not None:
            out[f"{key}/latency/p50_ms"] = c.regular["latency/p50_ms"]
        elif c.regular.get("latency/contended"):
            out[f"{key}/latency/contended"] = 1.0
        score = downstream_score(c.downstream)
        if score is not None:
            out[f"{key}/downstream_score"] = score
    teacher_score = downstream_score(teacher_row.get("downstream", {}))
    if teacher_score is not None:
        out["teacher/downstream_score"] = teacher_score
    return out


def cell(value: float | None, fmt: str) -> str:
    """A table cell: the number formatted, or an em dash for a missing / NaN one."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def downstream_cell(metrics: dict[str, float]) -> str:
    """The downstream score's cell, marked ``⚠ one class`` / ``⚠ at chance`` for a degenerate classifier."""
    return flagged(cell(downstream_score(metrics), ".2f"), downstream_flag(metrics))


def downstream_flag(metrics: dict[str, float]) -> str | None:
    """Why the downstream classifier is degenerate (reports/degenerate.py), judged on the split shown."""
    return degenerate(metrics, score_prefix(metrics)) if metrics else None


def comparison_rows(candidates: list[Candidate], teacher: dict[str, Any], task: str) -> list[str]:
    """The report's markdown table: one row per candidate, then the teacher's."""
    rows = [
        "| model | architecture | params (M) | GFLOPs/seq@128 | latency p50 (ms) | MLM acc flash | MLM acc regular "
        f"| {task} score |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in candidates:
        m = c.regular or c.flash
        rows.append(
            f"| {c.label} | `{c.name}` | {cell(m.get('params', 0) / 1e6, '.2f')} | "
            f"{cell(m.get('flops_per_seq@128', 0) / 1e9, '.3f')} | {latency_cell(m)} | "
            f"{cell(c.flash.get('val/mlm_acc'), '.4f')} | {cell(c.regular.get('val/mlm_acc'), '.4f')} | "
            f"{downstream_cell(c.downstream)} |"
        )
    rows.append(
        f"| teacher | `{teacher['name']}` | {teacher['params'] / 1e6:.2f} | {teacher['flops_per_seq@128'] / 1e9:.3f} | "
        f"{latency_cell(teacher)} | — | — | {downstream_cell(teacher.get('downstream', {}))} |"
    )
    return rows


def write_report(
    run_dir: Path,
    result: SearchResult,
    recipe: Any,
    search_cfg: SearchConfig,
    candidates: list[Candidate],
    teacher: dict[str, Any],
    tau: float,
    metrics: dict[str, float],
    task: str,
) -> Path:
    """report.md with the comparison table and the plots (copied beside it, so the folder travels whole).

    Args:
        run_dir: where report.md and the plots go.
        result: the search.
        recipe: recipe=autodistill's config (flash_fraction, regular_steps, select, max_selected, downstream).
        search_cfg: the search's settings.
        candidates: the regular-distilled students (the baseline first, if any).
        teacher: the teacher's row (name, params, flops_per_seq@128, latency/p50_ms, downstream).
        tau: flash_fidelity(candidates).
        metrics: summary_metrics(...).
        task: the task group's name (the score column's title).
    Returns:
        The path of report.md.
    """
    for name in ("pareto.png",):
        if (result.sweep_dir / name).exists():
            shutil.copy(result.sweep_dir / name, run_dir / name)
    plot_flash_vs_regular(candidates, run_dir / "flash_vs_regular.png")

    rows = comparison_rows(candidates, teacher, task)
    flags = [downstream_flag(m) for m in (*(c.downstream for c in candidates), teacher.get("downstream", {}))]
    s = search_cfg
    lines = [
        "# AutoDistill report",
        "",
        f"Search: {metrics['search/trials']:.0f} trials ({metrics['search/ok']:.0f} ok, {metrics['search/failed']:.0f} failed, "
        f"{metrics['search/infeasible']:.0f} infeasible, not trained, {metrics['search/unmeasured']:.0f} unmeasured: "
        f"latency timed on a busy CPU, not told to the optimiser) with `{s.optimizer}`; objectives "
        + ", ".join(f"{o.direction} `{o.name}`" for o in s.objectives)
        + (
            "; constraints " + ", ".join(f"`{c.name}` in [{c.min}, {c.max}]" for c in s.constraints)
            if s.constraints
            else ""
        )
        + f". Pareto front: {len(result.front)} student(s), hypervolume {result.hypervolume:.4g}. "
        f"Ledger and front: `{result.sweep_dir}`.",
        "",
        f"Flash = {recipe.flash_fraction:.0%} of the regular budget ({recipe.regular_steps} steps). "
        f"Selected ({recipe.select}, at most {recipe.max_selected}) and the baseline were regular-distilled:",
        "",
        *rows,
        "",
        f"Flash fidelity (AutoDistill §4.7): Kendall τ between flash and regular MLM accuracy over these "
        f"{len(candidates)} students = {cell(tau, '.3f')}.",
        (
            f"{task} score: the task's metric(s) x100 on its labelled test split (best-dev model; "
            f"{recipe.downstream.max_steps or recipe.downstream.epochs} {'steps' if recipe.downstream.max_steps else 'epochs'} "
            "of fine-tuning, recipe.downstream)."
            if recipe.downstream is not None
            else "Downstream fine-tuning: off (recipe.downstream=null)."
        ),
        *(["", FOOTNOTE] if any(flags) else []),
        "",
        "![Pareto front](pareto.png)",
        "",
        "![flash vs regular](flash_vs_regular.png)",
        "",
        f"Wall time: {metrics['wall_time_s'] / 60:.1f} min.",
        "",
    ]
    return write_text_atomic(run_dir / "report.md", "\n".join(lines))


def plot_flash_vs_regular(candidates: list[Candidate], path: Path) -> None:
    """Each candidate's MLM accuracy after flash (x) and regular (y) distillation, to ``path`` (PNG)."""
    from matplotlib.figure import Figure  # here, not at import: only the report plots

    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    for c in candidates:
        f, r = c.flash.get("val/mlm_acc"), c.regular.get("val/mlm_acc")
        if f is None or r is None:
            continue
        ax.scatter([f], [r], s=50, marker="*" if c.label == "baseline" else "o")
        ax.annotate(c.label, (f, r), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("MLM accuracy after flash distillation")
    ax.set_ylabel("MLM accuracy after regular distillation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
