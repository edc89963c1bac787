"""The efficiency trade-off of recipe=adabert sweeps (AdaBERT Table 5: β against size and accuracy).

    python run.py -m recipe=adabert recipe.beta=0,4,8 recipe.teacher=<dir>   # the Hydra callback writes
                                                                             # <sweep dir>/adabert_table.*
    python -m reports.adabert_table multirun/adabert/<time> [more dirs ...] [--out DIR]

Reads top to bottom: every adabert job dir under the given dirs (``.hydra/config.yaml`` with
recipe.name=adabert; one without ``metrics.json`` counts as failed) -> one row per job, labelled by what the
sweep varied (``.hydra/overrides.yaml``), ordered by task then β -> a teacher row per distinct teacher ->
``adabert_table.md`` (the table: derived K and op mix, params, FLOPs, measured latency, the ratios to the
teacher, dev/test accuracy), ``adabert_table.csv`` (every number, one line per job) and ``adabert_table.png``
(dev accuracy against params and against latency, the teacher as a star).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from core.files import write_text_atomic
from reports.degenerate import FOOTNOTE, degenerate, flagged
from reports.sweep_table import (
    SweepTableCli,
    latency_cell,
    markdown_table,
    measured_latency,
    natural_key,
    number,
    recipe_jobs,
    save_figure,
    select,
    write_csv,
)

log = logging.getLogger(__name__)

FILENAME = "adabert_table"
OP_GROUPS = {"conv": "std/dil conv", "pool": "pool", "skip": "skip", "zero": "zero"}


@dataclass(frozen=True)
class AdaBertJob:
    """One finished recipe=adabert job."""

    dir: Path
    task: str
    beta: float
    teacher: str  # recipe.teacher, or the teacher group's model fine-tuned in the job
    overrides: tuple[str, ...]
    genotype: tuple[str, ...]
    metrics: dict[str, float]

    def get(self, key: str) -> float | None:
        """The metric ``key``, or None where absent or not finite (or a latency measured under contention)."""
        if key.endswith("latency/p50_ms"):
            value = measured_latency(self.metrics, key.removesuffix("latency/p50_ms"))
        else:
            value = self.metrics.get(key)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class AdaBertTable:
    """What adabert_table.* were drawn from, and where they went."""

    jobs: list[AdaBertJob]
    labels: dict[Path, str]
    failed: list[Path]
    markdown: str = field(repr=False)
    markdown_path: Path | None = None
    csv_path: Path | None = None
    png_path: Path | None = None


@dataclass(frozen=True)
class AdaBertSweep:
    """The adabert jobs under some dirs: the finished ones by task, β and job number, and the failed dirs."""

    jobs: list[AdaBertJob]
    failed: list[Path]


def read_job(job_dir: Path, cfg: DictConfig) -> AdaBertJob:
    """A finished job from its dir (metrics.json, architecture.json, .hydra/overrides.yaml) and config."""
    overrides = job_dir / ".hydra" / "overrides.yaml"
    arch = job_dir / "architecture.json"
    return AdaBertJob(
        dir=job_dir,
        task=str(select(cfg, "task.name")),
        beta=float(select(cfg, "recipe.beta")),
        teacher=str(
            select(cfg, "recipe.teacher") or f"{select(cfg, 'teacher.name_or_path')} (fine-tuned in the job)"
        ),
        overrides=tuple(str(o) for o in OmegaConf.load(overrides)) if overrides.exists() else (),
        genotype=tuple(json.loads(arch.read_text())["genotype"]) if arch.exists() else (),
        metrics={k: float(v) for k, v in json.loads((job_dir / "metrics.json").read_text()).items()},
    )


def collect(dirs: Sequence[str | Path]) -> AdaBertSweep:
    """The recipe=adabert jobs under dirs (recursively); other recipes' jobs are skipped."""
    found = recipe_jobs(tuple(Path(d) for d in dirs), "adabert")
    jobs = [read_job(j.dir, j.cfg) for j in found.finished]
    return AdaBertSweep(sorted(jobs, key=lambda j: (j.task, j.beta, natural_key(j.dir))), found.failed)


def row_labels(jobs: Sequence[AdaBertJob]) -> dict[Path, str]:
    """Each job by the overrides that differ between the jobs (``β = 4`` for a plain β sweep)."""
    per_job = [dict(o.partition("=")[::2] for o in job.overrides) for job in jobs]
    varied = {k for k in set().union(*per_job) if len({d.get(k) for d in per_job}) > 1}

    def label(job: AdaBertJob) -> str:
        parts = [f"β = {job.beta:g}"]
        parts += [
            o for o in job.overrides if o.partition("=")[0] in varied and o.partition("=")[0] != "recipe.beta"
        ]
        return ", ".join(parts)

    return {job.dir: label(job) for job in jobs}


def op_mix(genotype: Sequence[str]) -> str:
    """``conv 4, pool 2, skip 1, zero 2``: how many edges of the cell each kind of op holds."""
    kinds = ["conv" if "conv" in o else "pool" if "pool" in o else o for o in genotype]
    return ", ".join(f"{k} {kinds.count(k)}" for k in OP_GROUPS if kinds.count(k)) or "—"


def teacher_jobs(jobs: Sequence[AdaBertJob]) -> dict[tuple[str, str], AdaBertJob]:
    """Per (teacher, task), the first job that used it: the one whose teacher measurements are shown."""
    first: dict[tuple[str, str], AdaBertJob] = {}
    for job in jobs:
        first.setdefault((job.teacher, job.task), job)
    return first


def acc_cell(metrics: dict[str, float], prefix: str) -> str:
    """``<prefix>acc``, marked ``⚠ one class`` / ``⚠ at chance`` for a degenerate classifier (reports/degenerate.py)."""
    return flagged(number(metrics.get(f"{prefix}acc"), ".4f"), degenerate(metrics, prefix))


def render_markdown(jobs: Sequence[AdaBertJob], labels: dict[Path, str], failed: Sequence[Path]) -> str:
    """adabert_table.md: one row per job, then one per teacher, and what the ratios and latencies mean."""
    tasks = sorted({j.task for j in jobs})
    header = ["Model"] + (["Task"] if len(tasks) > 1 else []) + [
        "Cell ops", "K", "Params (M)", "w/o emb. (M)", "× smaller", "MFLOPs/seq", "p50 (ms)", "× faster", "Dev acc", "Test acc"]  # fmt: skip
    lines = []
    for job in jobs:
        params, flops, body = job.get("params"), job.get("flops_per_seq@128"), job.get("params_non_embedding")
        lines.append([f"AdaBERT, {labels[job.dir]}"] + ([job.task] if len(tasks) > 1 else []) + [
            op_mix(job.genotype), number(job.get("num_cells"), ".0f"),
            number(None if params is None else params / 1e6, ".2f"), number(None if body is None else body / 1e6, ".3f"), number(job.get("compression"), ".1f"),
            number(None if flops is None else flops / 1e6, ".1f"), latency_cell(job.metrics),
            number(job.get("speedup"), ".1f"), acc_cell(job.metrics, "val/"), acc_cell(job.metrics, "test/"),
        ])  # fmt: skip
    for (teacher, task), job in teacher_jobs(jobs).items():
        params, body = job.get("teacher/params"), job.get("teacher/params_non_embedding")
        lines.append([f"teacher: {teacher}"] + ([task] if len(tasks) > 1 else []) + [
            "—", "—", number(None if params is None else params / 1e6, ".2f"),
            number(None if body is None else body / 1e6, ".3f"), "1.0", "—",
            latency_cell(job.metrics, "teacher/"), "1.0", acc_cell(job.metrics, "teacher/val/"),
            acc_cell(job.metrics, "teacher/test/"),
        ])  # fmt: skip
    out = [
        f"# AdaBERT: efficiency weight β against size and accuracy ({', '.join(tasks)})",
        "",
        *markdown_table(header, lines, left=3 if len(tasks) > 1 else 2),
        "",
        "Params include the factorised embedding table (w/o emb.: the cells and classifier, the teacher's "
        "encoder and head). ×: the teacher's total params and latency over the row's. Latency: p50 at batch 1 on the machine that ran each job "
        "(the teacher measured in the same job); compare rows only from one machine. The teacher's test accuracy "
        "and latency are from the first job that used it.",
    ]  # fmt: skip
    splits = ("val/", "test/", "teacher/val/", "teacher/test/")
    if any(degenerate(j.metrics, p) for j in jobs for p in splits):
        out += ["", FOOTNOTE]
    if failed:
        out += ["", f"{len(failed)} job(s) failed or unfinished: " + ", ".join(str(d) for d in failed)]
    return "\n".join(out) + "\n"


def csv_rows(jobs: Sequence[AdaBertJob], labels: dict[Path, str]) -> list[dict[str, Any]]:
    """adabert_table.csv: one line per job, every metric."""
    return [
        {
            "label": labels[j.dir],
            "task": j.task,
            "beta": j.beta,
            "genotype": " ".join(j.genotype),
            **j.metrics,
            "teacher": j.teacher,
            "job_dir": str(j.dir),
        }  # fmt: skip
        for j in jobs
    ]


def plot(jobs: Sequence[AdaBertJob], labels: dict[Path, str], path: Path) -> None:
    """Dev accuracy against params without the embedding tables (left: what the search sized; the tables
    are alike and would hide it) and against measured latency (right); the teacher as a star."""
    # here, not at import: Hydra imports this module in every job for the callback
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, teacher_key, xlabel, scale in (
        (
            axes[0],
            "params_non_embedding",
            "teacher/params_non_embedding",
            "params w/o embeddings (M, log scale)",
            1e-6,
        ),
        (axes[1], "latency/p50_ms", "teacher/latency/p50_ms", "latency p50, batch 1 (ms, log scale)", 1.0),
    ):
        for job in jobs:
            x, y = job.get(key), job.get("val/acc")
            if x is None or y is None:
                continue
            reason = degenerate(job.metrics, "val/")  # a degenerate classifier: hollow, named in its label
            ax.scatter([x * scale], [y], color="C0", facecolors="none" if reason else "C0")
            ax.annotate(f"{labels[job.dir]} (K={job.get('num_cells') or 0:.0f})" + (f" ⚠ {reason}" if reason else ""), (x * scale, y), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        for job in teacher_jobs(jobs).values():
            x, y = job.get(teacher_key), job.get("teacher/val/acc")
            if x is not None and y is not None:
                ax.scatter([x * scale], [y], marker="*", s=160, color="C3", label="teacher")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("dev accuracy")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles[:1], names[:1], fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_table(dirs: Sequence[str | Path], out: str | Path | None = None) -> AdaBertTable:
    """Write adabert_table.{md,csv,png} into ``out`` (default: the first dir).

    Returns:
        The jobs, their labels, the failed dirs, the markdown and the paths written.

    Raises:
        ValueError: no finished recipe=adabert job under ``dirs`` (the message names them).
    """
    found = collect(dirs)
    jobs, failed = found.jobs, found.failed
    if not jobs:
        raise ValueError(
            f"no finished recipe=adabert job (a dir with metrics.json and .hydra/config.yaml) under "
            f"{', '.join(map(str, dirs))}" + (f"; {len(failed)} failed or unfinished" if failed else "")
        )
    out_dir = Path(out) if out is not None else Path(dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = row_labels(jobs)
    result = AdaBertTable(
        jobs=jobs, labels=labels, failed=failed, markdown=render_markdown(jobs, labels, failed),
        markdown_path=out_dir / f"{FILENAME}.md", csv_path=out_dir / f"{FILENAME}.csv",
        png_path=out_dir / f"{FILENAME}.png",
    )  # fmt: skip
    write_text_atomic(result.markdown_path, result.markdown)
    write_csv(result.csv_path, csv_rows(jobs, labels))
    plot(jobs, labels, result.png_path)
    return result


class AdaBertTableCallback(Callback):
    """At the end of a multirun, the β table into the sweep dir (only if the sweep holds adabert jobs)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra's hook: ``config.hydra.sweep.dir`` is the sweep to tabulate."""
        found = collect([config.hydra.sweep.dir])
        if not found.jobs:
            if found.failed:
                log.warning("adabert table: none of the %d adabert jobs finished", len(found.failed))
            return
        result = write_table([config.hydra.sweep.dir])
        log.info(
            "adabert table (%d jobs, %d failed): %s", len(found.jobs), len(found.failed), result.markdown_path
        )


CLI = SweepTableCli(
    module="reports.adabert_table",
    description="AdaBERT's β trade-off table (markdown, CSV, PNG) from recipe=adabert sweep dirs.",
    filename=FILENAME,
    write=write_table,
)


def main(argv: Sequence[str] | None = None) -> AdaBertTable:
    """``python -m reports.adabert_table DIR [DIR ...] [--out DIR]``; see ``SweepTableCli.main``."""
    return CLI.main(argv)


if __name__ == "__main__":
    main()
