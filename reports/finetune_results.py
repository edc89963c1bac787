"""The fine-tuning results of recipe=finetune sweeps, as data: the paper's columns, the finished jobs, the
best-dev job per (model, task), and the rows of the table that reports/finetune_table.py writes.

Reads top to bottom: the columns (GLUE's facts from datamodules/glue.py in the BERT paper's order, then SQuAD,
then local tasks) -> the jobs under the given dirs -> per (model, task) the job with the best ``val/score`` ->
one row per model, with its median params and latency and the mean task score.

Import-light on purpose (no torch): Hydra imports the table's callback in every job.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from datamodules.glue import GLUE_TASKS
from reports.sweep_table import FinishedJob, measured_latency, natural_key, recipe_jobs, select


@dataclass(frozen=True)
class Column:
    """One column of the table: the task's metrics.json keys shown in it, joined by "/" like the papers."""

    header: str
    task: str  # task.name
    keys: tuple[str, ...]
    scale: float = 100.0  # metrics in [0, 1] are printed in percent; SQuAD's already are


# The BERT paper's GLUE order (GLUE_TASKS holds GLUE's facts, in its own order).
PAPER_GLUE_ORDER = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "wnli")


def glue_columns(task: str) -> tuple[Column, ...]:
    """A GLUE task's columns: one per validation split (MNLI: matched, mismatched), headed by GLUE's own name
    for it (its submission file: ``MNLI-m``), showing the task's official metrics in the papers' order.

    recipe=finetune logs the first validation split as ``val/*`` and the others as ``val_<rest>/*``; only the
    first shows every metric (MNLI has one), the others its first metric.
    """
    facts = GLUE_TASKS[task]
    headers = list(facts.submission_files.values())  # test split i is validation split i's twin
    columns = [Column(headers[0], task, tuple(f"val/{m}" for m in facts.metrics))]
    for split, header in zip(facts.validation_splits[1:], headers[1:]):
        columns.append(Column(header, task, (f"{split.replace('validation', 'val')}/{facts.metrics[0]}",)))
    return tuple(columns)


# GLUE in the BERT paper's order, then SQuAD (v1.1: EM/F1, already percent).
PAPER_COLUMNS: dict[str, tuple[Column, ...]] = {
    **{task: glue_columns(task) for task in PAPER_GLUE_ORDER},
    "squad": (Column("SQuAD", "squad", ("val/exact_match", "val/f1"), scale=1.0),),
}
# A local task prints whichever of these it has (modules.finetuning.metric_names: acc/f1, acc, pearson/spearman).
LOCAL_METRICS = ("val/acc", "val/f1", "val/mcc", "val/pearson", "val/spearman")


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
    """What the given dirs hold: finished finetune jobs, the dirs of failed (or unfinished) ones, and a line
    per given dir that held no finetune job at all (why it was skipped)."""

    dirs: tuple[Path, ...]
    jobs: list[Job]
    failed: list[Path]
    skipped: list[str] = field(default_factory=list)


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


# ---------------------------------------------------------------------------------------------- collect


def read_job(job_dir: Path, cfg: DictConfig) -> Job:
    """A finished job from its dir (``metrics.json``, ``.hydra/overrides.yaml``) and composed config."""
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


def pipeline_finetune_jobs(roots: Sequence[Path]) -> list[FinishedJob]:
    """recipe=autodistill's own fine-tuning runs under roots: ``<pipeline run dir>/finetune/<label>/`` with
    ``metrics.json`` (recipes/autodistill.py finetune_all). They are plain recipe=finetune runs but not Hydra
    jobs, so they have no ``.hydra/config.yaml``; their config is the pipeline's (``recipe.downstream``, the
    task, the teacher, the seed), with the model the pipeline gave them: the teacher, or
    ``<pipeline run dir>/regular/<label>/student``."""
    seen: set[Path] = set()
    found = []
    for root in roots:
        for metrics in sorted(root.rglob("metrics.json"), key=natural_key):
            job_dir, pipeline = metrics.parent, metrics.parent.parent.parent
            config = pipeline / ".hydra" / "config.yaml"
            if job_dir.parent.name != "finetune" or not config.exists() or job_dir.resolve() in seen:
                continue
            cfg = OmegaConf.load(config)
            downstream = select(cfg, "recipe.downstream")
            if select(cfg, "recipe.name") != "autodistill" or downstream is None:
                continue
            seen.add(job_dir.resolve())
            model = (
                "teacher"
                if job_dir.name == "teacher"
                else str(pipeline / "regular" / job_dir.name / "student")
            )
            recipe = {**OmegaConf.to_container(downstream), "name": "finetune", "model": model}
            parts = {k: OmegaConf.to_container(cfg[k]) for k in ("task", "teacher") if k in cfg}
            found.append(
                FinishedJob(
                    job_dir, OmegaConf.create({**parts, "recipe": recipe, "seed": select(cfg, "seed")})
                )
            )
    return found


def collect(dirs: Sequence[str | Path]) -> Sweep:
    """The finetune jobs under dirs (recursively): recipe=finetune Hydra jobs and recipe=autodistill's own
    fine-tuning runs (pipeline_finetune_jobs); other recipes' jobs are skipped, and a given dir that holds
    no finetune job at all gets a line in ``Sweep.skipped`` saying so."""
    roots = tuple(Path(d) for d in dirs)
    found = recipe_jobs(roots, "finetune")
    finished = found.finished + pipeline_finetune_jobs(roots)
    skipped = [
        f"{root}: no recipe=finetune job under it (neither a Hydra job dir with .hydra/config.yaml and "
        "recipe.name=finetune, nor a recipe=autodistill run's finetune/<label>/metrics.json)"
        for root in roots
        if not any(is_under(j.dir, root) for j in finished)
        and not any(is_under(d, root) for d in found.failed)
    ]
    return Sweep(
        dirs=roots, jobs=[read_job(j.dir, j.cfg) for j in finished], failed=found.failed, skipped=skipped
    )


def is_under(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it."""
    return path.resolve().is_relative_to(root.resolve())


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
    """A paper task's columns, or one column of a local task's metrics (those of ``metrics`` it has)."""
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
    """The median of metric ``name`` over the cells' jobs that have it; None if none has."""
    # params differ across tasks only by the head; latency is re-measured (with noise) in every job.
    values = [c.job.metrics[name] for c in cells if name in c.job.metrics]
    return statistics.median(values) if values else None


def median_latency(cells: Iterable[Cell]) -> float | None:
    """The median p50 over the cells' jobs whose latency was measured on a quiet machine (None if none)."""
    values = [v for c in cells if (v := measured_latency(c.job.metrics)) is not None]
    return statistics.median(values) if values else None


def build_table(jobs: Sequence[Job]) -> Table:
    """The table of ``jobs``: tasks in paper order, one row per model, each cell its best-dev job."""
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
                latency_ms=median_latency(mine.values()),
                avg=statistics.fmean(scores) if scores else None,
                complete=len(scores) == len(tasks),
            )
        )
    # The papers' layout: the biggest model (the teacher) first; a task-KD row right below its plain one.
    rows.sort(key=lambda r: (-(r.params_m or 0.0), r.label))
    return Table(tasks=tasks, columns=columns, rows=rows)
