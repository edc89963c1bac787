"""The leaderboard's table, plots and report, built from the cells' ``row.json`` (recipes/leaderboard.py).

    python -m reports.leaderboard <dir> [more dirs ...] [--out DIR]   # rebuild from the cells (any launcher)

Reads top to bottom: every ``<dir>/<method>/seed<k>/row.json`` -> one line per method (means over its seeds, the
score's spread = max - min) -> ratios against the teacher's line (compression = teacher params / params, speed-up =
teacher p50 / p50, % of the teacher's score) -> the Pareto front across methods (lower p50, higher test score) ->
``leaderboard.md`` (the table, the front, the methods not run and why), ``leaderboard.csv`` (one line per cell),
``leaderboard_latency.png`` (score vs measured latency, the front drawn) and ``leaderboard_compression.png`` (the
survey deck's chart: score vs compression ratio, log scale).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import write_text_atomic
from hydra_plugins.pareto_sweeper import non_dominated
from reports.sweep_table import markdown_table, number, save_figure, write_csv

FILENAME = "leaderboard"
# Averaged over a method's seeds (the row's columns; recipes/leaderboard_row.py says what each is).
AVERAGED = ("test_score", "val_score", "params", "params_nonzero", "params_nonembedding", "size_mb", "gflops", "p50_ms",
            "p50_ms_serving", "throughput", "wall_time_s")  # fmt: skip


@dataclass
class Line:
    """One method's line of the table: means over its seeds and the ratios against the teacher."""

    method: str
    seeds: list[int]
    values: dict[str, float | None]
    score_spread: float | None  # max - min of the test score over seeds; None with one seed
    contended: bool  # some timing ran on a busy CPU
    compression: float | None = None
    speedup: float | None = None
    score_ratio: float | None = None  # % of the teacher's test score
    on_front: bool = False


def read_rows(*dirs: Path) -> list[dict[str, Any]]:
    """Every cell's row under ``dirs`` (``<dir>/<method>/seed<k>/row.json``), in method then seed order."""
    paths = sorted(p for d in dirs for p in Path(d).glob("*/seed*/row.json"))
    return [json.loads(p.read_text()) for p in paths]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def build_lines(rows: Sequence[dict[str, Any]]) -> list[Line]:
    """One ``Line`` per method (means over seeds), the ratios against the teacher's line, the Pareto front.

    The front: lines not dominated on (p50 at batch 1, lower is better; test score, higher is better) by any other
    line, the teacher included. Lines without a test score or latency are left off the front.
    """
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    lines = []
    for name, cells in by_method.items():
        scores = [c["test_score"] for c in cells if c.get("test_score") is not None]
        lines.append(Line(
            method=name, seeds=sorted(c["seed"] for c in cells),
            values={k: _mean([c.get(k) for c in cells]) for k in AVERAGED},
            score_spread=max(scores) - min(scores) if len(scores) > 1 else None,
            contended=any(c.get("latency_contended") for c in cells),
        ))  # fmt: skip
    teacher = next((line for line in lines if line.method == "teacher"), None)
    if teacher is not None:
        tv = teacher.values
        for line in lines:
            v = line.values
            line.compression = tv["params"] / v["params"] if tv["params"] and v["params"] else None
            line.speedup = tv["p50_ms"] / v["p50_ms"] if tv["p50_ms"] and v["p50_ms"] else None
            if tv["test_score"] and v["test_score"] is not None:
                line.score_ratio = 100.0 * v["test_score"] / tv["test_score"]
    ranked = [line for line in lines if line.values["p50_ms"] is not None and line.values["test_score"] is not None]
    for i in non_dominated([(line.values["p50_ms"], -line.values["test_score"]) for line in ranked]):
        ranked[i].on_front = True
    return lines


def render_markdown(lines: Sequence[Line], missing: dict[str, str], budget: str) -> str:
    """The report: the budget, the table (front marked ★), what the front says, the methods not run and why."""
    header = ["method", "seeds", "test score", "± spread", "% teacher", "params (M)", "non-zero (M)", "non-emb (M)", "size (MB)",
              "GFLOPs", "p50 bs1 (ms)", "speed-up", "compression", "throughput (seq/s)", "train wall (min)"]  # fmt: skip
    body = []
    for line in sorted(lines, key=lambda x: (x.method != "teacher", x.values["p50_ms"] or float("inf"))):
        v = line.values
        body.append([
            ("★ " if line.on_front else "") + line.method + (" ⚠ busy CPU" if line.contended else ""),
            ",".join(map(str, line.seeds)), number(v["test_score"], ".2f"), number(line.score_spread, ".2f"),
            number(line.score_ratio, ".1f"), number(_scaled(v["params"], 1e-6), ".2f"),
            number(_scaled(v["params_nonzero"], 1e-6), ".2f"),
            number(_scaled(v["params_nonembedding"], 1e-6), ".2f"), number(v["size_mb"], ".1f"),
            number(v["gflops"], ".3f"), number(v["p50_ms"], ".2f"), _times(line.speedup), _times(line.compression),
            number(v["throughput"], ".0f"), number(_scaled(v["wall_time_s"], 1 / 60), ".1f"),
        ])  # fmt: skip
    front = [line.method for line in sorted(lines, key=lambda x: x.values["p50_ms"] or 0) if line.on_front]
    out = ["# Leaderboard: which small BERT is best here?", "", budget, "",
           *markdown_table(header, body), "",
           "★ = on the Pareto front of measured p50 latency (batch 1) and test score: no other method is both faster "
           "and more accurate. Front, fastest first: " + (", ".join(front) or "—") + ".", "",
           "test score: the task's metrics ×100 on its labelled test split (best-dev model); spread = max − min over "
           "seeds; speed-up and compression against the teacher's line; throughput at the serving batch.", "",
           "![score vs latency](leaderboard_latency.png)", "", "![score vs compression](leaderboard_compression.png)"]  # fmt: skip
    if missing:
        out += ["", "Not run:", *[f"- {name}: {why}" for name, why in sorted(missing.items())]]
    return "\n".join(out) + "\n"


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def plot(lines: Sequence[Line], out_dir: Path) -> None:
    """Score vs p50 (the front as a step line) and score vs compression ratio (log x), one marker per method."""
    from matplotlib.figure import Figure  # only the report plots

    shown = [line for line in lines if line.values["test_score"] is not None]
    for name, x_of, xlabel, log_x in (
        ("latency", lambda line: line.values["p50_ms"], "measured p50, batch 1 (ms)", False),
        ("compression", lambda line: line.compression, "compression ratio vs the teacher (params, log)", True),
    ):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        points = [(x_of(line), line) for line in shown if x_of(line) is not None]
        for x, line in points:
            ax.scatter(x, line.values["test_score"], s=40, marker="*" if line.on_front else "o")
            ax.annotate(line.method, (x, line.values["test_score"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
        if name == "latency":
            front = sorted((x, line.values["test_score"]) for x, line in points if line.on_front)
            if front:
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", linestyle="--", linewidth=1)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test score")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, out_dir / f"{FILENAME}_{name}.png", dpi=120)


def summary_metrics(lines: Sequence[Line]) -> dict[str, float]:
    """``<method>/<column>`` for every line (metrics.json, W&B's summary)."""
    out: dict[str, float] = {}
    for line in lines:
        extra = {"speedup": line.speedup, "compression": line.compression, "score_ratio": line.score_ratio,
                 "score_spread": line.score_spread, "on_front": float(line.on_front)}  # fmt: skip
        for key, value in {**line.values, **extra}.items():
            if value is not None:
                out[f"{line.method}/{key}"] = float(value)
    return out


def write_report(out_dir: Path, rows: Sequence[dict[str, Any]], missing: dict[str, str], budget: str) -> dict[str, float]:
    """Write leaderboard.{md,csv} and the two plots into ``out_dir``; return ``summary_metrics``."""
    lines = build_lines(rows)
    write_text_atomic(out_dir / f"{FILENAME}.md", render_markdown(lines, missing, budget))
    write_csv(out_dir / f"{FILENAME}.csv", list(rows))
    plot(lines, out_dir)
    return summary_metrics(lines)


def main(argv: Sequence[str]) -> int:
    """CLI: rebuild the report from the cells under the given dirs (written into the first, or ``--out``)."""
    args = list(argv)
    out = None
    if "--out" in args:
        i = args.index("--out")
        out = Path(args[i + 1])
        del args[i : i + 2]
    if not args:
        print("usage: python -m reports.leaderboard <dir> [more dirs ...] [--out DIR]", file=sys.stderr)
        return 2
    dirs = [Path(a) for a in args]
    rows = read_rows(*dirs)
    if not rows:
        print(f"no cells (<method>/seed<k>/row.json) under {', '.join(args)}", file=sys.stderr)
        return 1
    target = out or dirs[0]
    target.mkdir(parents=True, exist_ok=True)
    write_report(target, rows, {}, "Rebuilt from the cells' row.json (budget: see each cell's stage configs).")
    print(target / f"{FILENAME}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
