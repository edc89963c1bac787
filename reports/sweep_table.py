"""What every sweep table (reports/finetune_table.py, reports/adabert_table.py) shares: finding one recipe's
Hydra jobs under sweep dirs, formatting numbers and markdown tables, writing CSV and PNG files atomically, and
the command line ``python -m reports.<table> DIR [DIR ...] [--out DIR]``.

Import-light on purpose (no torch, no pyplot): Hydra imports the table callbacks in every job.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from core.files import write_atomic, write_text_atomic

MISSING_CELL = "—"


def natural_key(path: Path) -> tuple:
    """Sort job dirs 0, 1, 2, ..., 10 (Hydra's job numbers), not 0, 1, 10, 2."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def job_dirs(root: Path) -> list[Path]:
    """Every dir under root (root included) with a Hydra job record (``.hydra/config.yaml``)."""
    return sorted(
        {p.parent.parent for p in root.rglob("config.yaml") if p.parent.name == ".hydra"}, key=natural_key
    )


def select(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at dotted ``key``, or None where absent."""
    # Configs from other versions of the recipe may lack a key; absent reads as "not set".
    return OmegaConf.select(cfg, key, default=None)


@dataclass(frozen=True)
class FinishedJob:
    """A job dir with ``metrics.json`` and the config Hydra composed for it."""

    dir: Path
    cfg: DictConfig


@dataclass(frozen=True)
class RecipeJobs:
    """One recipe's Hydra jobs under some dirs: the finished ones (with their composed config) and the dirs
    of the failed or unfinished ones (no ``metrics.json``)."""

    finished: list[FinishedJob]
    failed: list[Path]


def recipe_jobs(roots: Sequence[Path], recipe: str) -> RecipeJobs:
    """The jobs of ``recipe`` (``recipe.name``) under roots, recursively; other recipes' jobs are skipped.

    Raises:
        OSError / omegaconf errors: a job's ``.hydra/config.yaml`` cannot be read.
    """
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
                finished.append(FinishedJob(job_dir, cfg))
            else:
                failed.append(job_dir)
    return RecipeJobs(finished, failed)


def number(value: float | None, fmt: str) -> str:
    """``format(value, fmt)``, or "—" for a missing or non-finite value."""
    return MISSING_CELL if value is None or not math.isfinite(value) else format(value, fmt)


def markdown_table(header: list[str], lines: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table: the first ``left`` columns left-aligned, numbers right-aligned."""
    align = ["---"] * left + ["--:"] * (len(header) - left)
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *lines)]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV (atomically); the header is the union of their keys, first-seen order."""
    columns: list[str] = []  # tasks / jobs have different metrics
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")  # the csv module ends lines itself (\r\n)
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def measured_latency(metrics: dict[str, float], prefix: str = "") -> float | None:
    """``<prefix>latency/p50_ms`` when it was measured on a quiet machine; None when absent or when
    ``<prefix>latency/contended`` says other processes loaded the CPU while it was timed (then the number
    is not a latency of the model and no table or plot may show or use it)."""
    if metrics.get(f"{prefix}latency/contended"):
        return None
    return metrics.get(f"{prefix}latency/p50_ms")


def latency_cell(metrics: dict[str, float], prefix: str = "", fmt: str = ".2f") -> str:
    """A table cell for ``<prefix>latency/p50_ms``: the number, "contended", or the missing-cell mark."""
    if metrics.get(f"{prefix}latency/contended"):
        return "contended"
    return number(metrics.get(f"{prefix}latency/p50_ms"), fmt)


def save_figure(fig: Any, path: Path, **savefig_kwargs: Any) -> None:
    """Render a ``matplotlib.figure.Figure`` to PNG with the Agg canvas (no pyplot, no global backend
    switch) and write it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: only the table writers plot

    FigureCanvasAgg(fig)
    write_atomic(path, lambda f: fig.savefig(f, format="png", **savefig_kwargs))


class WrittenTable(Protocol):
    """What a table writer returns: the markdown and the three files it wrote."""

    markdown: str
    markdown_path: Path
    csv_path: Path
    png_path: Path


@dataclass(frozen=True)
class SweepTableCli:
    """One table's command line: ``python -m <module> DIR [DIR ...] [--out DIR]``.

    Attributes:
        module: the ``python -m`` module name shown in the usage line.
        description: the help text's first line.
        filename: the stem of the files written (``<filename>.md`` ...).
        write: ``write(dirs, out)`` writes the table; raises ValueError (shown as the error) when the dirs
            hold no finished job.
    """

    module: str
    description: str
    filename: str
    write: Callable[[list[str], str | None], WrittenTable]

    def main(self, argv: Sequence[str] | None = None) -> WrittenTable:
        """Parse ``argv`` (default: sys.argv), write the table, print the markdown to stdout.

        Raises:
            SystemExit: bad arguments, or no finished job under the dirs (with the writer's message).
        """
        parser = argparse.ArgumentParser(prog=f"python -m {self.module}", description=self.description)
        parser.add_argument("dirs", nargs="+", help="sweep dirs (or job dirs), searched recursively")
        parser.add_argument(
            "--out", default=None, help=f"where to write {self.filename}.*; default: the first dir"
        )
        args = parser.parse_args(argv)
        try:
            result = self.write(args.dirs, args.out)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(result.markdown)
        print(
            f"wrote {result.markdown_path}, {result.csv_path.name}, {result.png_path.name}", file=sys.stderr
        )
        return result


def listed(values: Iterable[Any], fmt: str = "", limit: int = 10) -> str:
    """``a, b, c`` formatted with ``fmt``; past ``limit`` values, ``… (N more)``."""
    shown = [format(v, fmt) for v in values]
    return ", ".join(shown[:limit] + ([f"… ({len(shown) - limit} more)"] if len(shown) > limit else []))
