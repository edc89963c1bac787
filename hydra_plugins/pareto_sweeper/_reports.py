"""What a search writes for people: pareto.csv (the front, each trial marked distinguishable or not), trials.csv,
hypervolume.csv (after each trial), noise.json (the noise floors), pareto.png (the first two objectives, each point
with its floors as error bars), a progress bar or log lines, and one W&B run with logger=wandb."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from hydra_plugins.pareto_sweeper import _pareto as pareto
from hydra_plugins.pareto_sweeper._config import ObjectiveConfig, SearchConfig
from hydra_plugins.pareto_sweeper._ledger import SearchResult, Trial, TrialRecord, write_json
from hydra_plugins.pareto_sweeper._noise import NoiseFloors

log = logging.getLogger(__name__)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts; the union of keys, in first-seen order) atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# A metric name's unit suffix -> the unit an axis label spells out ("latency/p50_ms" -> "latency/p50 (ms)").
UNIT_SUFFIXES = {"_ms": "ms", "_us": "µs", "_s": "s", "_mb": "MB", "_gb": "GB", "_pct": "%"}


def axis_label(name: str, direction: str) -> str:
    """An objective's axis label: its name with the unit in words and which way is better, e.g.
    ``latency/p50 (ms) ↓ better``, ``val/mlm_acc ↑ better`` (project-agnostic: from the name's suffix)."""
    for suffix, unit in UNIT_SUFFIXES.items():
        if name.endswith(suffix):
            name = f"{name[: -len(suffix)]} ({unit})"
            break
    return f"{name} {'↑' if direction == 'max' else '↓'} better"


def front_with_baseline(
    points: list[tuple[float, float]],
    front: list[int],
    directions: tuple[str, str],
    baseline: tuple[float, float] | None,
) -> tuple[list[tuple[float, float]], list[int]]:
    """The staircase to draw (the non-dominated set of the front's points and the baseline), and the front
    points the baseline dominates (the search's front is among trials only; a reader compares with the star)."""
    signs = [-1.0 if d == "max" else 1.0 for d in directions]

    def loss(p: tuple[float, float]) -> list[float]:
        return [s * v for s, v in zip(signs, p)]

    if baseline is None:
        return [points[i] for i in front], []
    beaten = [i for i in front if pareto.dominates(loss(baseline), loss(points[i]))]
    candidates = [points[i] for i in front if i not in beaten] + [baseline]
    return [candidates[i] for i in pareto.non_dominated([loss(p) for p in candidates])], beaten


def plot_front(
    path: Path,
    points: list[tuple[float, float]],
    front: list[int],
    labels: tuple[str, str],
    baseline: tuple[float, float] | None = None,
    failed: list[tuple[float, float]] | None = None,
    title: str = "",
    directions: tuple[str, str] = ("min", "max"),
    floors: list[tuple[float, float]] | None = None,
    baseline_floor: tuple[float, float] | None = None,
    within_noise: list[int] | None = None,
):
    """All trials (grey), the front among trials and baseline (red staircase), front trials the baseline
    beats on both axes (hollow red), front trials within noise of a better one (pink), the baseline (black
    star); each point's noise floors as error bars; the legend outside the axes.

    Args:
        points, baseline, failed: (x, y) in objective units; front: indices into points.
        labels: the (x, y) axis labels (axis_label); directions: the (x, y) objectives' "min" / "max".
        floors, baseline_floor: each point's (x, y) noise floor, in objective units. A bar spans the floor
            (value +- floor / 2), so two points whose bars overlap on an axis differ by less than their floor
            there (_pareto.distinguishable compares a pair with the mean of its two floors).
        within_noise: front indices (into points) that another front trial beats by more than the noise.
    Returns:
        The matplotlib Figure (already saved to ``path``).
    """
    # A Figure on the Agg canvas: no pyplot state, no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _error_bars(ax, points + ([baseline] if baseline else []),
                (floors or []) + ([baseline_floor] if baseline and baseline_floor else []))  # fmt: skip
    if points:
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=22, c="0.6", label=f"trials ({len(points)})", zorder=2)
    if failed:
        xs, ys = zip(*failed)
        ax.scatter(xs, ys, s=22, marker="x", c="tab:orange", label=f"infeasible ({len(failed)})", zorder=2)
    stairs, beaten = front_with_baseline(points, front, directions, baseline)
    if stairs:
        kept = len(front) - len(beaten)
        ax.plot(*zip(*sorted(stairs)), "-", c="tab:red", drawstyle="steps-post", zorder=3)
        blurred = set(within_noise or []) - set(beaten)
        on_front = [points[i] for i in front if i not in beaten and i not in blurred]
        if on_front:
            ax.scatter(*zip(*on_front), s=36, c="tab:red", label=f"Pareto front ({kept})", zorder=3)
        if blurred:
            ax.scatter(*zip(*(points[i] for i in sorted(blurred))), s=36, c="pink", edgecolors="tab:red", zorder=3,
                       label=f"front, beaten beyond noise by a front trial ({len(blurred)})")  # fmt: skip
    if beaten:
        ax.scatter(*zip(*(points[i] for i in beaten)), s=50, facecolors="none", edgecolors="tab:red",
                   label=f"front trials the baseline beats ({len(beaten)})", zorder=3)  # fmt: skip
    if baseline is not None:
        ax.scatter([baseline[0]], [baseline[1]], s=160, marker="*", c="k", label="baseline", zorder=4)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # outside the axes: inside, it hides points
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return fig


def _error_bars(ax, points: list[tuple[float, float]], floors: list[tuple[float, float]]) -> None:
    """Each point's noise floors as grey error bars spanning the floor (+- floor / 2); nothing when all are 0."""
    if len(floors) != len(points) or not any(f for pair in floors for f in pair):
        return
    xs, ys = zip(*points)
    xerr, yerr = ([f[k] / 2 for f in floors] for k in (0, 1))
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.7", elinewidth=0.8, capsize=2, zorder=1,
                label="noise floor (bar length)")  # fmt: skip


def write_reports(result: SearchResult, cfg: SearchConfig) -> None:
    """pareto.csv (the strict front; ``distinguishable``: no front trial beats it by more than the noise floors),
    trials.csv, hypervolume.csv (after each trial), noise.json (NoiseFloors.as_json), pareto.png (the first two
    objectives: the first up, the second right), all in the result's sweep dir."""
    objectives = cfg.objectives
    trials = [r for r in result.records if r.kind == "trial"]
    distinct = {id(r) for r in result.distinguishable}
    rows = [{**_row(r, objectives, cfg.report_columns), "distinguishable": id(r) in distinct} for r in result.front]
    write_csv(result.sweep_dir / "pareto.csv", rows or [{"trial": "", "name": ""}])
    all_rows = [_row(r, objectives, cfg.report_columns) for r in result.records]
    write_csv(result.sweep_dir / "trials.csv", all_rows or [{"trial": "", "name": ""}])
    if result.reference is not None:
        curve = pareto.hypervolume_curve([r.losses(objectives) for r in trials], result.reference)
        write_csv(
            result.sweep_dir / "hypervolume.csv",
            [{"trial": r.trial, "status": r.status, "hypervolume": hv} for r, hv in zip(trials, curve)]
            or [{"trial": "", "status": "", "hypervolume": ""}],
        )
    write_json(result.sweep_dir / "noise.json", result.noise.as_json())
    if len(objectives) >= 2:
        _plot(result, cfg, trials)


def _plot(result: SearchResult, cfg: SearchConfig, trials: list[TrialRecord]) -> None:
    """pareto.png: the first objective up, the second right, with each point's floors as error bars."""
    y, x = cfg.objectives[0], cfg.objectives[1]  # e.g. accuracy (up) against latency (right)
    ok = [r for r in trials if r.status == "ok" and r.feasible]
    points = [(r.objectives[x.name], r.objectives[y.name]) for r in ok]
    front_ids, distinct = {id(r) for r in result.front}, {id(r) for r in result.distinguishable}
    front = [i for i, r in enumerate(ok) if id(r) in front_ids]
    noise = result.noise
    infeasible = [
        (r.metrics[x.name], r.metrics[y.name])
        for r in trials
        if r.status in ("ok", "infeasible") and not r.feasible and x.name in r.metrics and y.name in r.metrics
    ]  # not failed or unmeasured trials: their numbers are partial or untrustworthy (invalid_if)
    base = next((r for r in result.records if r.kind == "baseline" and r.status == "ok"), None)
    plot_front(
        result.sweep_dir / "pareto.png",
        points,
        front,
        (axis_label(x.name, x.direction), axis_label(y.name, y.direction)),
        baseline=(base.objectives[x.name], base.objectives[y.name]) if base else None,
        failed=infeasible,
        title=f"{len(trials)} trials, front {len(result.front)} ({len(result.distinguishable)} beyond noise), "
        f"hypervolume {result.hypervolume:.4g}",
        directions=(x.direction, y.direction),
        floors=[(_floor(noise, x.name, r), _floor(noise, y.name, r)) for r in ok],
        baseline_floor=(_floor(noise, x.name, base), _floor(noise, y.name, base)) if base else None,
        within_noise=[i for i in front if id(ok[i]) not in distinct],
    )


def _floor(noise: NoiseFloors, name: str, r: TrialRecord) -> float:
    floor = noise.floors.get(name)
    return floor.of(r.metrics) if floor is not None else 0.0


def _row(r: TrialRecord, objectives: list[ObjectiveConfig], columns: list[str]) -> dict:
    row = {"trial": r.trial, "name": r.name, "status": r.status, "feasible": r.feasible}
    row.update({o.name: r.objectives.get(o.name, r.metrics.get(o.name)) for o in objectives})
    for k in columns:
        if k not in row and k in r.metrics:
            row[k] = r.metrics[k]
    row["duration_s"] = r.duration_s
    row["overrides"] = " ".join(r.overrides)
    if r.error:
        row["error"] = r.error
    return row


class Progress:
    """A rich progress bar over trained trials, with the last trial and the front size; or log lines.

    Args:
        budget: trials to train in all.
        done: trials trained already (a resumed search).
        mode: bar | log | none.
    """

    def __init__(self, budget: int, done: int, mode: str = "bar") -> None:
        self.mode, self.bar = mode, None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"),
            )  # fmt: skip
            self.task = self.bar.add_task("", total=budget, completed=min(done, budget))
            self.bar.start()

    def start(self, trial: Trial) -> None:
        """A trial was launched."""
        if self.bar is not None:
            self.bar.update(self.task, description=f"running #{trial.index} {trial.name}")
        elif self.mode == "log":
            log.info("trial %s: %s", trial.index, trial.name)

    def finish(self, rec: TrialRecord, result: SearchResult) -> None:
        """A trial finished (``rec``); ``result`` is the search after it."""
        if self.mode == "none":
            return
        shown = ", ".join(f"{k}={v:.4g}" for k, v in rec.objectives.items()) or rec.error or ""
        if self.bar is not None:
            self.bar.update(
                self.task,
                advance=1 if rec.kind == "trial" else 0,
                description=f"#{rec.trial} {rec.status} {shown[:80]} | front {len(result.front)} | HV {result.hypervolume:.4g}",
            )
        log.info(
            "trial %s %s [%s] %s (%.0f s) | front %d, hypervolume %.4g",
            rec.trial, rec.status, rec.name, shown, rec.duration_s, len(result.front), result.hypervolume,
        )  # fmt: skip

    def close(self) -> None:
        """Stop drawing the bar."""
        if self.bar is not None:
            self.bar.stop()


def wandb_mode() -> str:
    """offline when ``WANDB_MODE=offline`` or no W&B key is configured (``WANDB_API_KEY``, or ~/.netrc, which
    ``wandb login`` writes): never a login prompt in the middle of a sweep; else online."""
    if os.environ.get("WANDB_MODE") == "offline" or not _wandb_has_key():
        return "offline"
    return "online"


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL_HOST", "api.wandb.ai")) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def log_to_wandb(result: SearchResult, cfg: SearchConfig, logger_cfg: Any, mode: str | None = None) -> None:
    """With a W&B logger config: one W&B run for the search (objectives and hypervolume per trial, the plot).

    Args:
        result: the finished search.
        cfg: its settings (optimizer, budget and objectives go into the run's config).
        logger_cfg: the run's logger config; anything but ``lightning...WandbLogger`` logs nothing.
        mode: online | offline; None: ``wandb_mode()`` (a caller with its own credential check passes it).
    """
    if not logger_cfg or "WandbLogger" not in str(logger_cfg.get("_target_", "")):
        return
    import wandb

    mode = mode or wandb_mode()
    hv = {}
    hv_path = result.sweep_dir / "hypervolume.csv"
    if hv_path.exists():
        hv = {row["trial"]: float(row["hypervolume"]) for row in csv.DictReader(hv_path.open()) if row["hypervolume"]}
    run = wandb.init(
        project=logger_cfg.get("project") or "distill-recipes",
        name=f"search-{result.sweep_dir.name}",
        dir=str(result.sweep_dir),
        mode=mode,
        job_type="search",
        group=logger_cfg.get("group") or str(result.sweep_dir),  # beside the trials' own runs (one per job)
        tags=list(logger_cfg.get("tags") or []) or None,
        config={"optimizer": cfg.optimizer, "budget": cfg.budget, "objectives": [o.name for o in cfg.objectives]},
    )
    for n, rec in enumerate(r for r in result.records if r.kind == "trial"):
        run.log(
            {"trial": n, "hypervolume": hv.get(str(rec.trial), 0.0), **{f"objective/{k}": v for k, v in rec.objectives.items()}}
        )
    if (result.sweep_dir / "pareto.png").exists():
        run.log({"pareto": wandb.Image(str(result.sweep_dir / "pareto.png"))})
    run.summary["hypervolume"] = result.hypervolume
    run.summary["front_size"] = len(result.front)
    run.summary["distinguishable"] = len(result.distinguishable)
    run.summary.update({f"noise/{n}": f.floor for n, f in result.noise.floors.items() if f.floor is not None})
    run.finish()
