"""recipe=autodistill's report: report.md (params, FLOPs, measured latency, MLM accuracy flash and regular,
task score, against the baseline and the teacher), the flash-vs-regular rank agreement (Kendall tau,
AutoDistill §4.7), the search's noise floors and which compared students are within them, the plots, and the
summary metrics of the run."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.files import write_text_atomic
from hydra_plugins.pareto_sweeper import NoiseFloors, SearchConfig, SearchResult
from reports.degenerate import FOOTNOTE, degenerate, flagged, score_prefix
from reports.sweep_table import latency_cell, measured_latency, save_figure
from reports.targets import rows_from, target_lines, target_metrics


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


def flash_fidelity(candidates: list[Candidate], metric: str = "val/mlm_acc", direction: str = "max",
                   against: str = "regular") -> float:
    """Kendall tau between the flash ``metric`` and, over the regular-distilled students (AutoDistill §4.7),
    either the same metric after regular distillation (``against="regular"``) or the downstream score
    (``"downstream"``). Oriented so that +1 means the flash run ranks the students as the later stage does
    (a ``direction="min"`` metric is negated first). NaN with fewer than two students having both numbers."""
    from scipy import stats

    sign = 1.0 if direction == "max" else -1.0

    def later(c: Candidate) -> float | None:
        return downstream_score(c.downstream) if against == "downstream" else c.regular.get(metric)

    pairs = [(c.flash.get(metric), later(c)) for c in candidates]
    pairs = [(sign * f, r if against == "downstream" else sign * r) for f, r in pairs if f is not None and r is not None]
    if len(pairs) < 2:
        return float("nan")
    return float(stats.kendalltau(*zip(*pairs)).statistic)


def summary_metrics(
    result: SearchResult, candidates: list[Candidate], teacher_row: dict, tau: dict[str, float], wall: float
) -> dict[str, float]:
    """The run's metrics.json: the search's counts and hypervolume, its noise floors (``noise/<objective>``, in the
    objective's units; a per-trial floor: its median over the trials), tau, each candidate's regular and
    downstream numbers, the teacher's downstream score, the wall time (s)."""
    trials = [r for r in result.records if r.kind == "trial"]
    out = {
        "search/trials": len(trials),
        "search/ok": sum(r.status == "ok" and r.feasible for r in trials),
        # trained, then a constraint failed on the trained student's own metrics (e.g. timed slower after training)
        "search/trained_infeasible": sum(r.status == "ok" and not r.feasible for r in trials),
        "search/failed": sum(r.status == "failed" for r in trials),
        "search/infeasible": sum(r.status == "infeasible" for r in trials),
        "search/unmeasured": sum(r.status == "unmeasured" for r in trials),
        "search/front_size": len(result.front),
        "search/distinguishable": len(result.distinguishable),
        "search/hypervolume": result.hypervolume,
        "flash_fidelity/kendall_tau": tau["regular"],
        "flash_fidelity/kendall_tau_downstream": tau["downstream"],
        "wall_time_s": wall,
    }
    out.update({f"noise/{name}": f.floor for name, f in result.noise.floors.items() if f.floor is not None})
    for c in candidates:
        key = c.label.replace(" ", "_")
        for name in ("val/loss", "val/mlm_acc", "val/fm", "params"):
            if name in c.regular:
                out[f"{key}/{name}"] = c.regular[name]
        if measured_latency(c.regular) is not None:
            out[f"{key}/latency/p50_ms"] = c.regular["latency/p50_ms"]
        elif c.regular.get("latency/contended"):
            out[f"{key}/latency/contended"] = 1.0
        score = downstream_score(c.downstream)
        if score is not None:
            out[f"{key}/downstream_score"] = score
    out.update(target_metrics(*rows_from(candidates, teacher_row)))
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


def comparison_rows(
    candidates: list[Candidate], teacher: dict[str, Any], task: str, metric: str = "val/mlm_acc"
) -> list[str]:
    """The report's markdown table: one row per candidate, then the teacher's; ``metric`` (the search's quality
    objective) after flash and after regular distillation."""
    rows = [
        f"| model | architecture | params (M) | GFLOPs/seq@128 | latency p50 (ms) | `{metric}` flash | `{metric}` regular "
        f"| {task} score |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in candidates:
        m = c.regular or c.flash
        rows.append(
            f"| {c.label} | `{c.name}` | {cell(m.get('params', 0) / 1e6, '.2f')} | "
            f"{cell(m.get('flops_per_seq@128', 0) / 1e9, '.3f')} | {latency_cell(m)} | "
            f"{cell(c.flash.get(metric), '.4f')} | {cell(c.regular.get(metric), '.4f')} | "
            f"{downstream_cell(c.downstream)} |"
        )
    rows.append(
        f"| teacher | `{teacher['name']}` | {teacher['params'] / 1e6:.2f} | {teacher['flops_per_seq@128'] / 1e9:.3f} | "
        f"{latency_cell(teacher)} | — | — | {downstream_cell(teacher.get('downstream', {}))} |"
    )
    return rows


def noise_rows(noise: NoiseFloors) -> list[str]:
    """The report's noise-floor table: objective, floor (its units), how it was measured."""
    rows = ["| objective | noise floor | how measured |", "|---|---:|---|"]
    for name, f in noise.floors.items():
        rows.append(f"| `{name}` | {cell(f.floor, '.3g')} | {f.detail} |")
    return rows


def noise_section(noise: NoiseFloors, candidates: list[Candidate], search_cfg: SearchConfig) -> list[str]:
    """The report's lines on noise: what a floor means, the floors' table, the pairs within them."""
    return [
        "Noise floors (the smallest difference on an objective that is more than noise; `noise.json` in the "
        "search dir): a student leaves the front's selection only if another is nowhere worse by more than a "
        "floor and better by more than one somewhere.",
        "",
        *noise_rows(noise),
        "",
        *(within_noise(candidates, search_cfg, noise)
          or ["Every compared pair (selected vs the baseline, selected among themselves) differs by at least the "
              "noise floor on each search objective where a floor is known."]),
        "",
    ]


def within_noise(candidates: list[Candidate], search_cfg: SearchConfig, noise: NoiseFloors) -> list[str]:
    """A sentence for every compared pair (each selected student vs the baseline, and the selected students among
    themselves) that differs by less than the noise floor on a search objective (their flash-trial numbers)."""
    out = []
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            first, second = (b, a) if a.label == "baseline" else (a, b)
            for o in search_cfg.objectives:
                x, y = first.flash.get(o.name), second.flash.get(o.name)
                floor = noise.pair(o.name, first.flash, second.flash)
                if x is None or y is None or not floor > 0 or abs(x - y) >= floor:
                    continue
                other = "the baseline" if second.label == "baseline" else second.label
                out.append(f"{first.label} and {other} differ by {abs(x - y):.3g} on {o.name}, below its noise "
                           f"floor {floor:.3g}: not distinguishable.")  # fmt: skip
    return out


def write_report(
    run_dir: Path,
    result: SearchResult,
    recipe: Any,
    search_cfg: SearchConfig,
    candidates: list[Candidate],
    teacher: dict[str, Any],
    tau: dict[str, float],
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
        tau: ``{"regular": τ, "downstream": τ}`` of the first objective (``flash_fidelity``).
        metrics: summary_metrics(...).
        task: the task group's name (the score column's title).
    Returns:
        The path of report.md.
    """
    for name in ("pareto.png",):
        if (result.sweep_dir / name).exists():
            shutil.copy(result.sweep_dir / name, run_dir / name)
    metric = search_cfg.objectives[0].name  # the quality objective the flash runs ranked students by
    floor = result.noise.floors.get(metric)
    plot_flash_vs_regular(candidates, run_dir / "flash_vs_regular.png", floor.of if floor else None, metric)

    rows = comparison_rows(candidates, teacher, task, metric)
    flags = [downstream_flag(m) for m in (*(c.downstream for c in candidates), teacher.get("downstream", {}))]
    s = search_cfg
    lines = [
        "# AutoDistill report",
        "",
        *target_lines(*rows_from(candidates, teacher)),
        "",
        f"Search: {metrics['search/trials']:.0f} trials ({metrics['search/ok']:.0f} ok, {metrics['search/failed']:.0f} failed, "
        + (f"{n:.0f} trained and then infeasible (a constraint missed by the trained student), "
           if (n := metrics.get("search/trained_infeasible", 0)) else "")
        + f"{metrics['search/infeasible']:.0f} infeasible, not trained, {metrics['search/unmeasured']:.0f} unmeasured: "
        f"latency timed on a busy CPU, not told to the optimiser) with `{s.optimizer}`; objectives "
        + ", ".join(f"{o.direction} `{o.name}`" for o in s.objectives)
        + (
            "; constraints " + ", ".join(f"`{c.name}` in [{c.min}, {c.max}]" for c in s.constraints)
            if s.constraints
            else ""
        )
        + f". Pareto front: {len(result.front)} student(s), {len(result.distinguishable)} of them beaten by no "
        f"other by more than the noise floors (selected from), hypervolume {result.hypervolume:.4g}. "
        f"Ledger and front: `{result.sweep_dir}`.",
        "",
        *noise_section(result.noise, candidates, search_cfg),
        f"Flash = {recipe.flash_fraction:.0%} of the regular budget ({recipe.regular_steps} steps). "
        f"Selected ({recipe.select}, at most {recipe.max_selected}) and the baseline were regular-distilled:",
        "",
        *rows,
        "",
        f"Flash fidelity (AutoDistill §4.7): Kendall τ of the flash `{s.objectives[0].name}` against the same metric "
        f"after regular distillation = {cell(tau['regular'], '.3f')}, against the {task} score = "
        f"{cell(tau['downstream'], '.3f')}, over these {len(candidates)} students"
        + (" (too few to mean much: `benchmarks/fidelity.py` measures it over 8+ students and 2 seeds)."
           if len(candidates) < 6 else "."),
        downstream_text(recipe, task),
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


def budget_text(ft: Any) -> str:
    """``500 steps at lr 0.0005`` for a recipe=finetune config."""
    steps = f"{ft.max_steps} steps" if ft.max_steps else f"{ft.epochs} epoch{'s' * (ft.epochs != 1)}"
    lr = ft.optimizer.get("lr") if isinstance(ft.optimizer, dict) else None
    return steps + (f" at lr {lr:g}" if lr is not None else "")


def downstream_text(recipe: Any, task: str) -> str:
    """What the task score column means: split, budgets of the students and the teacher, task KD."""
    if recipe.downstream is None:
        return "Downstream fine-tuning: off (recipe.downstream=null)."
    teacher = getattr(recipe, "teacher_downstream", None) or recipe.downstream
    kd = recipe.downstream.task_kd
    kd_text = (
        f"with task KD from the fine-tuned teacher (γ={kd.gamma:g}, T={kd.temperature:g})"
        if getattr(recipe, "downstream_kd", False) or kd.teacher
        else "on the labels alone"
    )
    return (
        f"{task} score: the task's metric(s) x100 on its labelled test split (best-dev model). Fine-tuning: "
        f"students {budget_text(recipe.downstream)} {kd_text} (recipe.downstream), the teacher "
        f"{budget_text(teacher)} (recipe.teacher_downstream)."
    )


def plot_flash_vs_regular(
    candidates: list[Candidate], path: Path, floor_of: Any = None, metric: str = "val/mlm_acc"
):
    """Each candidate's ``metric`` (the quality objective) after flash (x) and regular (y) distillation, to ``path`` (PNG).

    Args:
        floor_of: (a candidate's flash metrics) -> the flash accuracy's noise floor (NoiseFloor.of); drawn as
            an x error bar spanning it (+- floor / 2). None: no bars. Regular accuracy has no measured floor.
    Returns:
        The matplotlib Figure (already saved).
    """
    from matplotlib.figure import Figure  # here, not at import: only the report plots

    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    for c in candidates:
        f, r = c.flash.get(metric), c.regular.get(metric)
        if f is None or r is None:
            continue
        if floor_of is not None and floor_of(c.flash) > 0:
            ax.errorbar([f], [r], xerr=[floor_of(c.flash) / 2], fmt="none", ecolor="0.7", capsize=2, zorder=1)
        ax.scatter([f], [r], s=50, marker="*" if c.label == "baseline" else "o")
        ax.annotate(c.label, (f, r), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"{metric} after flash distillation" + (" (bar: noise floor)" if floor_of else ""))
    ax.set_ylabel(f"{metric} after regular distillation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return fig
