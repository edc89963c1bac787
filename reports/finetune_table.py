"""The paper-layout table of best-dev fine-tuning results (BERT Table 1 + SQuAD) from recipe=finetune sweeps.

    python run.py -m recipe=finetune task=glue task.glue_task=cola,sst2 recipe.optimizer.lr=1e-5,3e-5 \
        recipe.model=teacher,<student dir>            # the Hydra callback writes <sweep dir>/finetune_table.*
    python -m reports.finetune_table multirun/finetune/<time> [more sweep dirs ...] [--out DIR]

Reads top to bottom (the data: reports/finetune_results.py): every job dir under the given dirs (``.hydra/config.yaml`` with recipe.name=finetune;
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

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from core.files import write_text_atomic
from reports.degenerate import FOOTNOTE, degenerate, flagged
from reports.finetune_results import PAPER_COLUMNS, Column, Row, Sweep, Table, build_table, collect
from reports.sweep_table import (
    MISSING_CELL,
    SweepTableCli,
    listed,
    markdown_table,
    number,
    save_figure,
    write_csv,
)

log = logging.getLogger(__name__)

FILENAME = "finetune_table"
METRIC_NAMES = {"acc": "acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman",
                "exact_match": "EM"}  # fmt: skip


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


# ------------------------------------------------------------------------------------------------ write


def cell_text(row: Row, column: Column) -> str:
    """``78.5`` or ``88.9/84.8`` (F1/acc), or "—" where the row has no job for the task or lacks a metric;
    ``⚠ one class: 57.3/49.1`` for a degenerate classifier (reports/degenerate.py, on the best-dev metrics)."""
    cell = row.cells.get(column.task)
    if cell is None or any(k not in cell.job.metrics for k in column.keys) or not column.keys:
        return MISSING_CELL
    text = "/".join(number(cell.job.metrics[k] * column.scale, ".1f") for k in column.keys)
    return flagged(text, degenerate(cell.job.metrics, "val/"))


def any_degenerate(table: Table) -> bool:
    """Whether some cell of the table holds a degenerate classifier (then the notes explain the mark)."""
    return any(degenerate(c.job.metrics, "val/") for row in table.rows for c in row.cells.values())


def task_header(task: str) -> str:
    """A task's name in the papers' spelling (``SST-2``; ``MNLI`` for both its columns)."""
    return "MNLI" if task == "mnli" else PAPER_COLUMNS[task][0].header if task in PAPER_COLUMNS else task


def is_accuracy(column: Column) -> bool:
    return len(column.keys) == 1 and column.keys[0].endswith("/acc")


def metric_label(column: Column) -> str:
    return "/".join(METRIC_NAMES.get(k.split("/")[-1], k.split("/")[-1]) for k in column.keys)


def render_markdown(table: Table, sweep: Sweep) -> str:
    """finetune_table.md: the table, the notes a reader needs to trust it, the winning learning rates."""
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
    if any_degenerate(table):
        notes.append(FOOTNOTE)
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
    notes += [f"Skipped {line}." for line in sweep.skipped]
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
                    **{k: m[k] for k in ("best_step", "steps", "params", "latency/p50_ms", "latency/contended") if k in m},
                    "model_path": row.key.model,
                    "teacher_model": row.key.teacher,  # the teacher group's model, when model is "teacher"
                    "task_kd_teacher": row.key.kd_teacher,
                    "overrides": " ".join(cell.job.overrides),
                    "job_dir": str(cell.job.dir),
                }
            )
    return out


def plot_scores(table: Table, path: Path) -> None:
    """Grouped bars: one group per task, one bar per model, the task score (val/score) of its best job."""
    from matplotlib.figure import Figure  # here, not at import: Hydra imports this module in every job

    n = max(len(table.rows), 1)
    width = 0.8 / n
    fig = Figure(figsize=(max(5.0, 1.1 * len(table.tasks) * max(1.0, n / 3) + 2), 4.2))
    ax = fig.subplots()
    for i, row in enumerate(table.rows):
        xs = [t for t, task in enumerate(table.tasks) if task in row.cells]
        scores = [row.cells[table.tasks[t]].job.score for t in xs]
        ys = [s if math.isfinite(s) else 0.0 for s in scores]  # a diverged (NaN) job: an empty bar
        centres = [x - 0.4 + width * (i + 0.5) for x in xs]
        bars = ax.bar(centres, ys, width=width, label=row.label)
        for bar, t, centre, y in zip(bars, xs, centres, ys):  # a degenerate classifier: hatched, marked
            reason = degenerate(row.cells[table.tasks[t]].job.metrics, "val/")
            if reason is not None:
                bar.set_hatch("//")
                ax.annotate(f"⚠ {reason}", (centre, y), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(table.tasks)), [task_header(t) for t in table.tasks])
    ax.set_ylabel("task score (best dev, ×100)")
    ax.grid(axis="y", alpha=0.3)
    # below the axes: with many models a legend inside would hide bars
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(n, 3), frameon=False)
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def write_table(sweep: Sweep, out: str | Path | None = None) -> TableResult:
    """Write finetune_table.{md,csv,png} into ``out`` (default: the first dir of the sweep).

    Returns:
        The paths written, the rows, the job counts and the markdown.

    Raises:
        ValueError: the sweep holds no finished finetune job.
    """
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
    write_text_atomic(result.markdown_path, result.markdown)
    write_csv(result.csv_path, csv_rows(table))
    plot_scores(table, result.png_path)
    return result


class FinetuneTableCallback(Callback):
    """At the end of a multirun, the fine-tuning table into the sweep dir (only if it holds finetune jobs)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra's hook: ``config.hydra.sweep.dir`` is the sweep to tabulate."""
        sweep = collect([config.hydra.sweep.dir])
        if not sweep.jobs:
            if sweep.failed:
                log.warning("fine-tuning table: none of the %d finetune jobs finished", len(sweep.failed))
            return
        result = write_table(sweep)
        log.info(
            "fine-tuning table (%d jobs, %d failed): %s", result.jobs, result.failed, result.markdown_path
        )


def write_from_dirs(dirs: Sequence[str], out: str | None) -> TableResult:
    """The CLI's writer: the finetune jobs under ``dirs`` into ``out``.

    Raises:
        ValueError: no finished recipe=finetune job under the dirs (the message names them).
    """
    sweep = collect(dirs)
    if not sweep.jobs:
        raise ValueError(
            f"no finished recipe=finetune job (a dir with metrics.json and .hydra/config.yaml, or a "
            f"recipe=autodistill run's finetune/<label>/) under {', '.join(dirs)}"
            + (f"; {len(sweep.failed)} failed or unfinished" if sweep.failed else "")
        )
    for line in sweep.skipped:  # the table's notes say it too; here for the person at the terminal
        print(f"skipped {line}", file=sys.stderr)
    return write_table(sweep, out)


CLI = SweepTableCli(
    module="reports.finetune_table",
    description="The best-dev fine-tuning table (markdown, CSV, PNG) from recipe=finetune sweep dirs.",
    filename=FILENAME,
    write=write_from_dirs,
)


def main(argv: Sequence[str] | None = None) -> TableResult:
    """``python -m reports.finetune_table DIR [DIR ...] [--out DIR]``; see ``SweepTableCli.main``."""
    return CLI.main(argv)


if __name__ == "__main__":
    main()
