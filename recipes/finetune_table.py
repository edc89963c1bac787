"""The paper-layout table of best-dev fine-tuning results (BERT Table 1 + SQuAD) from recipe=finetune sweeps.

    python run.py -m recipe=finetune task=glue task.glue_task=cola,sst2 recipe.optimizer.lr=1e-5,3e-5 \
        recipe.model=teacher,<student dir>            # the Hydra callback writes <sweep dir>/finetune_table.*
    python -m recipes.finetune_table multirun/finetune/<time> [more sweep dirs ...] [--out DIR]

Reads top to bottom: every job dir under the given dirs (``.hydra/config.yaml`` with recipe.name=finetune;
one without ``metrics.json`` counts as failed) -> one row per model (``recipe.model``, `` + task KD`` when
``recipe.task_kd.teacher`` is set) and one column per task (``task.name``) -> each cell the job with the
best ``val/score`` over everything else swept (lr, seed, ...) -> ``finetune_table.md`` (the table, the winning
learning rates, notes), ``finetune_table.csv`` (one line per cell: every val/* and test/* metric, lr, job dir)
and ``finetune_table.png`` (task score per task and model, grouped bars).

The callback (conf/run.yaml: ``hydra.callbacks.finetune_table``) runs at the end of every multirun and does
nothing unless the sweep holds finetune jobs. Hydra's basic launcher stops a sweep at the first failed job
before this callback runs; for such sweeps, and for jobs that finished separately (SLURM) or several sweeps
merged (e.g. one without and one with task KD), call the CLI.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

FILENAME = "finetune_table"
MISSING_CELL = "—"


@dataclass(frozen=True)
class Column:
    """One column of the table: the task's metrics.json keys shown in it, joined by "/" like the papers."""

    header: str
    task: str  # task.name
    keys: tuple[str, ...]
    scale: float = 100.0  # metrics in [0, 1] are printed in percent; SQuAD's already are


# The BERT paper's GLUE order, then SQuAD (v1.1: EM/F1, already percent). The metrics per GLUE task are
# modules.finetuning.GLUE_METRICS in the papers' print order; importing that module here would load torch
# (~10 s) for a table, so tests/test_finetune_table.py checks the two agree instead.
PAPER_COLUMNS: dict[str, tuple[Column, ...]] = {
    "mnli": (Column("MNLI-m", "mnli", ("val/acc",)), Column("MNLI-mm", "mnli", ("val_mismatched/acc",))),
    "qqp": (Column("QQP", "qqp", ("val/f1", "val/acc")),),
    "qnli": (Column("QNLI", "qnli", ("val/acc",)),),
    "sst2": (Column("SST-2", "sst2", ("val/acc",)),),
    "cola": (Column("CoLA", "cola", ("val/mcc",)),),
    "stsb": (Column("STS-B", "stsb", ("val/pearson", "val/spearman")),),
    "mrpc": (Column("MRPC", "mrpc", ("val/f1", "val/acc")),),
    "rte": (Column("RTE", "rte", ("val/acc",)),),
    "wnli": (Column("WNLI", "wnli", ("val/acc",)),),
    "squad": (Column("SQuAD", "squad", ("val/exact_match", "val/f1"), scale=1.0),),
}
# A local task prints whichever of these it has (modules.finetuning.metric_names: acc/f1, acc, pearson/spearman).
LOCAL_METRICS = ("val/acc", "val/f1", "val/mcc", "val/pearson", "val/spearman")
METRIC_NAMES = {"acc": "acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman",
                "exact_match": "EM"}  # fmt: skip


@dataclass(frozen=True)
class RowKey:
    """What makes a row: the fine-tuned model and its task-KD teacher (rows never pool over these)."""

    model: str  # recipe.model: "teacher", a local dir or a hub id
    teacher: str | None  # teacher.name_or_path when model == "teacher" (a teacher sweep gives several rows)
    kd_teacher: str | None  # recipe.task_kd.teacher


@dataclass(frozen=True)
class Job:
    """One finished recipe=finetune job."""

    dir: Path
    row: RowKey
    task: str
    lr: float | None
    seed: int | None
    overrides: tuple[str, ...]  # .hydra/overrides.yaml: what this job set on the command line
    metrics: dict[str, float]

    @property
    def score(self) -> float:
        """The selection criterion; a NaN (diverged) or absent score never wins."""
        value = self.metrics.get("val/score", math.nan)
        return value if math.isfinite(value) else -math.inf


@dataclass(frozen=True)
class Sweep:
    """What the given dirs hold: finished finetune jobs and the dirs of failed (or unfinished) ones."""

    dirs: tuple[Path, ...]
    jobs: list[Job]
    failed: list[Path]


@dataclass(frozen=True)
class Cell:
    """The best-dev job of one (model, task), and how many jobs it was chosen from."""

    job: Job
    candidates: int


@dataclass(frozen=True)
class Row:
    """One model's line of the table."""

    label: str
    key: RowKey
    cells: dict[str, Cell]  # task -> its best job; a task absent here is "—" in the table
    params_m: float | None
    latency_ms: float | None
    avg: float | None  # mean val/score over the table's tasks that this row has
    complete: bool  # has every task of the table (else Avg is marked "*")


@dataclass(frozen=True)
class Table:
    """The table before formatting: what the markdown, the CSV and the plot are all drawn from."""

    tasks: list[str]  # in paper order
    columns: list[Column]  # MNLI gives two
    rows: list[Row]


@dataclass(frozen=True)
class TableResult:
    """What write_table wrote, and the rows it wrote."""

    markdown_path: Path
    csv_path: Path
    png_path: Path
    rows: list[Row]
    jobs: int
    failed: int
    markdown: str = field(repr=False)


# ---------------------------------------------------------------------------------------------- collect


def natural_key(path: Path) -> tuple:
    """Sort job dirs 0, 1, 2, ..., 10 (Hydra's job numbers), not 0, 1, 10, 2."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def job_dirs(root: Path) -> list[Path]:
    """Every dir under root (root included) with a Hydra job record."""
    return sorted(
        {p.parent.parent for p in root.rglob("config.yaml") if p.parent.name == ".hydra"}, key=natural_key
    )


def select(cfg: DictConfig, key: str) -> Any:
    # Configs from other versions of the recipe may lack a key; absent reads as "not set".
    return OmegaConf.select(cfg, key, default=None)


def read_job(job_dir: Path, cfg: DictConfig) -> Job:
    metrics = json.loads((job_dir / "metrics.json").read_text())
    overrides = job_dir / ".hydra" / "overrides.yaml"
    model = str(select(cfg, "recipe.model"))
    lr, seed = select(cfg, "recipe.optimizer.lr"), select(cfg, "seed")
    return Job(
        dir=job_dir,
        row=RowKey(
            model=model,
            teacher=select(cfg, "teacher.name_or_path") if model == "teacher" else None,
            kd_teacher=select(cfg, "recipe.task_kd.teacher") or None,
        ),
        task=str(select(cfg, "task.name")),
        lr=None if lr is None else float(lr),
        seed=None if seed is None else int(seed),
        overrides=tuple(OmegaConf.load(overrides)) if overrides.exists() else (),
        metrics={k: float(v) for k, v in metrics.items()},
    )


@dataclass(frozen=True)
class RecipeJobs:
    """One recipe's Hydra jobs under some dirs: the finished ones (with their composed config) and the dirs
    of the failed or unfinished ones (no ``metrics.json``)."""

    finished: list[tuple[Path, DictConfig]]
    failed: list[Path]


def recipe_jobs(roots: Sequence[Path], recipe: str) -> RecipeJobs:
    """The jobs of ``recipe`` (``recipe.name``) under roots, recursively; other recipes' jobs are skipped."""
    seen: set[Path] = set()  # overlapping dirs (a sweep and one of its jobs) count each job once
    finished, failed = [], []
    for root in roots:
        for job_dir in job_dirs(root):
            if job_dir.resolve() in seen:
                continue
            seen.add(job_dir.resolve())
            cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
            if select(cfg, "recipe.name") != recipe:
                continue
            if (job_dir / "metrics.json").exists():
                finished.append((job_dir, cfg))
            else:
                failed.append(job_dir)
    return RecipeJobs(finished, failed)


def collect(dirs: Sequence[str | Path]) -> Sweep:
    """The finetune jobs under dirs (recursively); other recipes' jobs are skipped."""
    roots = tuple(Path(d) for d in dirs)
    found = recipe_jobs(roots, "finetune")
    return Sweep(dirs=roots, jobs=[read_job(d, cfg) for d, cfg in found.finished], failed=found.failed)


# ------------------------------------------------------------------------------------------------ table


def best_cells(jobs: Iterable[Job]) -> dict[tuple[RowKey, str], Cell]:
    """Per (model, task): the job with the highest val/score; a tie goes to the first job dir."""
    groups: dict[tuple[RowKey, str], list[Job]] = {}
    for job in sorted(jobs, key=lambda j: natural_key(j.dir)):
        groups.setdefault((job.row, job.task), []).append(job)
    return {
        key: Cell(job=max(group, key=lambda j: j.score), candidates=len(group))
        for key, group in groups.items()
    }


def task_order(tasks: Iterable[str]) -> list[str]:
    """GLUE in the BERT paper's order, then SQuAD, then local tasks by name."""
    paper = list(PAPER_COLUMNS)
    return sorted(set(tasks), key=lambda t: (paper.index(t), "") if t in paper else (len(paper), t))


def task_columns(task: str, metrics: dict[str, float]) -> tuple[Column, ...]:
    if task in PAPER_COLUMNS:
        return PAPER_COLUMNS[task]
    return (Column(task, task, tuple(k for k in LOCAL_METRICS if k in metrics)),)


def tail(path: str, parts: int) -> str:
    """The last `parts` components of a path or hub id: ``.../regular/baseline/student`` -> baseline/student."""
    pieces = [p for p in path.replace("\\", "/").split("/") if p]
    return "/".join(pieces[-parts:])


def row_label(key: RowKey, parts: int = 2) -> str:
    """The row's display name; more path parts (``parts``) only to tell apart rows that would read the same."""
    if key.model != "teacher":
        model = tail(key.model, parts)
    else:
        model = (
            "teacher" if parts <= 2 or key.teacher is None else f"teacher ({tail(key.teacher, parts - 1)})"
        )
    if key.kd_teacher is None:
        return model
    return model + (" + task KD" if parts <= 2 else f" + task KD ({tail(key.kd_teacher, parts - 1)})")


def row_labels(keys: Iterable[RowKey]) -> dict[RowKey, str]:
    """Short labels, lengthened where two rows would otherwise share one (two runs' ``baseline/student``)."""
    parts = dict.fromkeys(keys, 2)
    for _ in range(64):  # deeper than any real path; stops a loop on keys that differ only in spelling
        labels = {k: row_label(k, n) for k, n in parts.items()}
        clashing = [k for k in parts if list(labels.values()).count(labels[k]) > 1]
        if not clashing:
            break
        for k in clashing:
            parts[k] += 1
    return {k: row_label(k, n) for k, n in parts.items()}


def median_of(cells: Iterable[Cell], name: str) -> float | None:
    # params differ across tasks only by the head; latency is re-measured (with noise) in every job.
    values = [c.job.metrics[name] for c in cells if name in c.job.metrics]
    return statistics.median(values) if values else None


def build_table(jobs: Sequence[Job]) -> Table:
    cells = best_cells(jobs)
    tasks = task_order(job.task for job in jobs)
    some_metrics = {job.task: job.metrics for job in jobs}
    columns = [column for task in tasks for column in task_columns(task, some_metrics[task])]
    labels = row_labels(dict.fromkeys(job.row for job in jobs))
    rows = []
    for key, label in labels.items():
        mine = {task: cells[key, task] for task in tasks if (key, task) in cells}
        scores = [c.job.score for c in mine.values() if math.isfinite(c.job.score)]
        rows.append(
            Row(
                label=label,
                key=key,
                cells=mine,
                params_m=None if (p := median_of(mine.values(), "params")) is None else p / 1e6,
                latency_ms=median_of(mine.values(), "latency/p50_ms"),
                avg=statistics.fmean(scores) if scores else None,
                complete=len(scores) == len(tasks),
            )
        )
    # The papers' layout: the biggest model (the teacher) first; a task-KD row right below its plain one.
    rows.sort(key=lambda r: (-(r.params_m or 0.0), r.label))
    return Table(tasks=tasks, columns=columns, rows=rows)


# ------------------------------------------------------------------------------------------------ write


def number(value: float | None, fmt: str) -> str:
    return MISSING_CELL if value is None or not math.isfinite(value) else format(value, fmt)


def cell_text(row: Row, column: Column) -> str:
    """``78.5`` or ``88.9/84.8`` (F1/acc), or "—" where the row has no job for the task or lacks a metric."""
    cell = row.cells.get(column.task)
    if cell is None or any(k not in cell.job.metrics for k in column.keys) or not column.keys:
        return MISSING_CELL
    return "/".join(number(cell.job.metrics[k] * column.scale, ".1f") for k in column.keys)


def task_header(task: str) -> str:
    return "MNLI" if task == "mnli" else PAPER_COLUMNS[task][0].header if task in PAPER_COLUMNS else task


def is_accuracy(column: Column) -> bool:
    return len(column.keys) == 1 and column.keys[0].endswith("/acc")


def metric_label(column: Column) -> str:
    return "/".join(METRIC_NAMES.get(k.split("/")[-1], k.split("/")[-1]) for k in column.keys)


def markdown_table(header: list[str], lines: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table: the first ``left`` columns left-aligned, numbers right-aligned."""
    align = ["---"] * left + ["--:"] * (len(header) - left)
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *lines)]


def render_markdown(table: Table, sweep: Sweep) -> str:
    header = ["Model", "Params (M)", "p50 (ms)", *(c.header for c in table.columns), "Avg"]
    lines = [
        [row.label, number(row.params_m, ".3g"), number(row.latency_ms, ".2f"),
         *(cell_text(row, c) for c in table.columns), number(row.avg, ".1f") + ("" if row.complete else "*")]
        for row in table.rows
    ]  # fmt: skip
    lrs = [
        [
            row.label,
            *(number(row.cells[t].job.lr, "g") if t in row.cells else MISSING_CELL for t in table.tasks),
        ]
        for row in table.rows
    ]
    return "\n".join(
        [
            "# Fine-tuning: best dev per model and task",
            "",
            *markdown_table(header, lines),
            "",
            *(f"- {note}" for note in table_notes(table, sweep)),
            "",
            "## Winning learning rate per cell",
            "",
            *markdown_table(["Model", *(task_header(t) for t in table.tasks)], lrs),
            "",
            f"Every metric of every cell, with its job dir: `{FILENAME}.csv`.",
            "",
            f"![task scores]({FILENAME}.png)",
            "",
        ]
    )


def listed(values: Iterable[Any], fmt: str = "", limit: int = 10) -> str:
    shown = [format(v, fmt) for v in values]
    return ", ".join(shown[:limit] + ([f"… ({len(shown) - limit} more)"] if len(shown) > limit else []))


def table_notes(table: Table, sweep: Sweep) -> list[str]:
    """What a reader needs to trust the table: the selection rule, the metrics, Avg, and the jobs behind it."""
    counts = sorted({c.candidates for row in table.rows for c in row.cells.values()})
    among = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    special = [c for c in table.columns if not is_accuracy(c)]
    metrics = [f"{c.header} {metric_label(c)}" for c in special]
    metrics += ["others accuracy"] if len(special) < len(table.columns) else []
    notes = [
        f"Selection: best dev over lr/seeds. Each cell is the job with the highest `val/score` among the {among} "
        f"job(s) of its model and task; every other swept setting is pooled too "
        f"(lr ∈ {{{listed(sorted({j.lr for j in sweep.jobs if j.lr is not None}), 'g')}}}, "
        f"seed ∈ {{{listed(sorted({j.seed for j in sweep.jobs if j.seed is not None}))}}})"
        + ("; MNLI-mm is the same job (and step) as MNLI-m" if "mnli" in table.tasks else "")
        + ". Dev-set numbers ×100"
        + (" (SQuAD's are percent already)" if "squad" in table.tasks else "")
        + ".",
        f"Metrics: {'; '.join(metrics)}.",
        "Avg: the mean of each row's task scores (`val/score`: the mean of a task's metrics ×100) over the "
        f"{len(table.tasks)} task(s) in the table"
        + (", MNLI counted once (its matched score)" if "mnli" in table.tasks else "")
        + ".",
    ]
    if not all(r.complete for r in table.rows):
        notes.append(
            f"\\* Avg over the tasks the row has; {MISSING_CELL}: no finished job of that model on that task."
        )
    notes.append(
        "Params: the fine-tuned model with its task head; p50: its median serving latency as measured in its "
        f"fine-tuning jobs (latency config); {MISSING_CELL} where not measured."
    )
    failed = (
        f"{len(sweep.failed)} failed or unfinished (no metrics.json): {listed(f'`{d}`' for d in sweep.failed)}."
        if sweep.failed
        else "0 failed."
    )
    notes.append(
        f"Jobs: {len(sweep.jobs)} finished finetune job(s) under {listed(f'`{d}`' for d in sweep.dirs)}; {failed}"
    )
    return notes


def csv_rows(table: Table) -> list[dict[str, Any]]:
    """One line per (model, task): the best job's identity and every val*/ and test/ metric."""
    out = []
    for row in table.rows:
        for task in table.tasks:
            if task not in row.cells:
                continue
            cell = row.cells[task]
            m = cell.job.metrics
            out.append(
                {
                    "model": row.label,
                    "task": task,
                    "lr": cell.job.lr,
                    "seed": cell.job.seed,
                    "candidates": cell.candidates,
                    **{k: v for k, v in m.items() if k.startswith(("val/", "val_", "test/"))},
                    **{k: m[k] for k in ("best_step", "steps", "params", "latency/p50_ms") if k in m},
                    "model_path": row.key.model,
                    "teacher_model": row.key.teacher,  # the teacher group's model, when model is "teacher"
                    "task_kd_teacher": row.key.kd_teacher,
                    "overrides": " ".join(cell.job.overrides),
                    "job_dir": str(cell.job.dir),
                }
            )
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []  # the union of keys, first-seen order (tasks have different metrics)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_scores(table: Table, path: Path) -> None:
    """Grouped bars: one group per task, one bar per model, the task score (val/score) of its best job."""
    import matplotlib  # here, not at import: Hydra imports this module in every job for the callback

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(table.rows), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table.tasks) * max(1.0, n / 3) + 2), 4.2))
    for i, row in enumerate(table.rows):
        xs = [t for t, task in enumerate(table.tasks) if task in row.cells]
        scores = [row.cells[table.tasks[t]].job.score for t in xs]
        ys = [s if math.isfinite(s) else 0.0 for s in scores]  # a diverged (NaN) job: an empty bar
        ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], ys, width=width, label=row.label)
    ax.set_xticks(range(len(table.tasks)), [task_header(t) for t in table.tasks])
    ax.set_ylabel("task score (best dev, ×100)")
    ax.grid(axis="y", alpha=0.3)
    # below the axes: with many models a legend inside would hide bars
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(n, 3), frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_table(sweep: Sweep, out: str | Path | None = None) -> TableResult:
    """Write finetune_table.{md,csv,png} into ``out`` (default: the first dir of the sweep)."""
    if not sweep.jobs:
        raise ValueError(f"no finished finetune job under {', '.join(map(str, sweep.dirs))}")
    out_dir = Path(out) if out is not None else sweep.dirs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(sweep.jobs)
    result = TableResult(
        markdown_path=out_dir / f"{FILENAME}.md",
        csv_path=out_dir / f"{FILENAME}.csv",
        png_path=out_dir / f"{FILENAME}.png",
        rows=table.rows,
        jobs=len(sweep.jobs),
        failed=len(sweep.failed),
        markdown=render_markdown(table, sweep),
    )
    result.markdown_path.write_text(result.markdown)
    write_csv(result.csv_path, csv_rows(table))
    plot_scores(table, result.png_path)
    return result


class FinetuneTableCallback(Callback):
    """At the end of a multirun, the fine-tuning table into the sweep dir (only if it holds finetune jobs)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = collect([config.hydra.sweep.dir])
        if not sweep.jobs:
            if sweep.failed:
                log.warning("fine-tuning table: none of the %d finetune jobs finished", len(sweep.failed))
            return
        result = write_table(sweep)
        log.info(
            "fine-tuning table (%d jobs, %d failed): %s", result.jobs, result.failed, result.markdown_path
        )


def sweep_table_parser(module: str, description: str, filename: str) -> argparse.ArgumentParser:
    """The command line of a sweep table: ``python -m <module> DIR [DIR ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("dirs", nargs="+", help="sweep dirs (or job dirs), searched recursively")
    parser.add_argument("--out", default=None, help=f"where to write {filename}.*; default: the first dir")
    return parser


def main(argv: Sequence[str] | None = None) -> TableResult:
    parser = sweep_table_parser(
        "recipes.finetune_table",
        "The best-dev fine-tuning table (markdown, CSV, PNG) from recipe=finetune sweep dirs.",
        FILENAME,
    )
    args = parser.parse_args(argv)
    sweep = collect(args.dirs)
    if not sweep.jobs:
        raise SystemExit(
            f"no finished recipe=finetune job (a dir with metrics.json and .hydra/config.yaml) under "
            f"{', '.join(args.dirs)}"
            + (f"; {len(sweep.failed)} failed or unfinished" if sweep.failed else "")
        )
    result = write_table(sweep, args.out)
    print(result.markdown)
    print(f"wrote {result.markdown_path}, {result.csv_path.name}, {result.png_path.name}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
