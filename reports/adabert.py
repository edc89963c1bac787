"""AdaBERT's report of one run (recipe=adabert): ``report.md`` with the derived cell as text and a picture
(``cell.png``), the search trajectory beside the teacher's layer probes (``search.png``), and
``architecture.json`` (K, the genotype, the search history) that reports/adabert_table.py reads.

Plots draw on a ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import write_text_atomic
from modules.adabert_ops import OP_NAMES, DerivedArchitecture, cell_edges
from reports.sweep_table import latency_cell, save_figure


@dataclass(frozen=True)
class AdaBertSettings:
    """The recipe settings report.md states (from recipe=adabert's config)."""

    task: str  # task.name
    search_epochs: int
    retrain_epochs: int
    gamma: float
    beta: float
    temperature: float
    tau_start: float
    tau_end: float
    inherit_weights: bool
    num_nodes: int  # intermediate nodes per cell
    latency_seq_len: int  # latency.seq_len: what the speed-up was measured at

    @classmethod
    def from_run(cls, cfg: Any) -> AdaBertSettings:
        """What report.md states, from a recipe=adabert run's config (``RunConfig``; typed loosely: reports
        sit below recipes in the import order)."""
        r = cfg.recipe
        return cls(
            task=cfg.task.name, search_epochs=r.search_epochs, retrain_epochs=r.retrain_epochs, gamma=r.gamma,
            beta=r.beta, temperature=r.temperature, tau_start=r.tau_start, tau_end=r.tau_end,
            inherit_weights=r.inherit_weights, num_nodes=r.num_nodes, latency_seq_len=cfg.latency.seq_len,
        )  # fmt: skip


@dataclass(frozen=True)
class AdaBertReport:
    """Everything one run's report shows.

    Attributes:
        settings: what was run.
        arch: the derived child (K and one op per edge).
        metrics: the run's metrics.json (teacher/*, latency/*, params, compression, speedup, ...).
        probe_dev_acc: the dev accuracy of the teacher's layer probes, first layer first.
        history: per search epoch, the argmax child's ``val/score`` and ``num_cells``.
    """

    settings: AdaBertSettings
    arch: DerivedArchitecture
    metrics: dict[str, float]
    probe_dev_acc: list[float]
    history: list[dict]


# Where along its edge a label may sit (fractions from the source), in order of preference.
LABEL_STEPS = (0.5, 0.35, 0.65, 0.25, 0.75, 0.15, 0.85)


def place_labels(
    edges: list[tuple[tuple[float, float], tuple[float, float]]],
    avoid: list[tuple[float, float]],
    size: tuple[float, float],
    scale: tuple[float, float] = (1.0, 1.0),
) -> list[tuple[float, float]]:
    """A point on each edge for its label, greedily: the first of LABEL_STEPS whose label box overlaps the
    fewest boxes already placed (and the boxes around ``avoid``, the node names).

    Args:
        edges: ((x0, y0), (x1, y1)) per edge, in data units; avoid: points other labels must keep off.
        size: a label box's (width, height) in inches; scale: inches per data unit along (x, y).
    Returns:
        One (x, y) per edge, in data units.
    """
    placed: list[tuple[float, float]] = []

    def overlaps(p: tuple[float, float], others: list[tuple[float, float]]) -> int:
        return sum(
            abs(p[0] - q[0]) * scale[0] < size[0] and abs(p[1] - q[1]) * scale[1] < size[1] for q in others
        )

    for (x0, y0), (x1, y1) in edges:
        options = [(x0 + t * (x1 - x0), y0 + t * (y1 - y0)) for t in LABEL_STEPS]
        placed.append(min(options, key=lambda p: overlaps(p, placed + avoid)))  # min keeps the first of ties
    return placed


def cell_layout(num_nodes: int) -> dict[int, tuple[float, float]]:
    """Inputs left, nodes left to right on three rows (top, bottom, middle: no node on the line between two
    others of its row's neighbours), the output right."""
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for i in range(num_nodes):
        pos[2 + i] = (1.0 + i, (1.3, -1.3, 0.0)[i % 3])
    pos[2 + num_nodes] = (1.0 + num_nodes, 0.0)
    return pos


def draw_cell(arch: DerivedArchitecture, num_nodes: int, path: Path) -> None:
    """Draw the derived cell as a DAG into the PNG ``path``: inputs left, nodes on three rows, edges as arrows
    labelled with their op (labels placed off each other), the attentive sum of the nodes dashed."""
    from matplotlib.figure import Figure  # here: Hydra imports the table callbacks beside this in every job

    names = ["c_{k-2}", "c_{k-1}"] + [f"node {i}" for i in range(num_nodes)] + ["output"]
    pos = cell_layout(num_nodes)
    out = 2 + num_nodes
    width, height = 2.2 * (num_nodes + 2), 3.6
    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    # arrows stop short of the node boxes (shrink, in points) so every head shows which way the edge runs
    arrow = {"arrowstyle": "-|>", "mutation_scale": 12, "shrinkA": 16, "shrinkB": 16}
    edges = [(pos[j], pos[2 + node], op) for (node, j), op in zip(cell_edges(num_nodes), arch.genotype)
             if op != "zero"]  # fmt: skip
    scale = (width / (num_nodes + 2.2), height / 3.6)
    spots = place_labels([(a, b) for a, b, _ in edges], list(pos.values()), (0.75, 0.22), scale)
    for (start, end, op), (x, y) in zip(edges, spots):
        ax.annotate("", end, start, arrowprops={**arrow, "color": "0.4"})
        ax.text(x, y, op, fontsize=7, ha="center", va="center",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    for i in range(num_nodes):
        ax.annotate("", pos[out], pos[2 + i], arrowprops={**arrow, "color": "0.75", "ls": "--"})
    for k, (x, y) in pos.items():
        ax.text(x, y, names[k], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "#dde7f5" if k < 2 or k == out else "#f5e6cc"})  # fmt: skip
    ax.set_xlim(-0.6, num_nodes + 1.6)
    ax.set_ylim(-1.8, 1.8)
    ax.axis("off")
    ax.set_title(f"derived cell (x{arch.num_cells}); dashed: attentive sum")
    save_figure(fig, path, dpi=130, bbox_inches="tight")


def plot_search(history: list[dict], probe_dev_acc: list[float], path: Path) -> None:
    """Plot into the PNG ``path``. Left: the argmax child's dev score and K per search epoch. Right: probe
    accuracy per teacher layer."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    if history:
        epochs = range(1, len(history) + 1)
        left.plot(epochs, [h["val/score"] for h in history], "o-", label="dev score of the argmax child")
        left.set_xlabel("search epoch")
        left.set_ylabel("dev score")
        twin = left.twinx()
        twin.step(epochs, [h["num_cells"] for h in history], where="mid", color="C1", label="K")
        twin.set_ylabel("K (cells)")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, names = (a + b for a, b in zip(left.get_legend_handles_labels(), twin.get_legend_handles_labels()))
        # below the axes: inside, it covered the last epochs' points
        left.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8,
                    frameon=False)  # fmt: skip
    right.bar(range(1, len(probe_dev_acc) + 1), probe_dev_acc, color="C2")
    right.set_xlabel("teacher layer")
    right.set_ylabel("probe dev accuracy")
    right.set_ylim(min(probe_dev_acc + [0.5]) - 0.05, 1.0)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def write_report(run_dir: Path, report: AdaBertReport) -> Path:
    """Write report.md, cell.png, search.png and architecture.json into ``run_dir`` (each atomically).

    Returns:
        The path of report.md.

    Raises:
        KeyError: ``report.metrics`` lacks teacher/params, params, flops_per_seq@128 or compression.
    """
    settings, arch, metrics, history = report.settings, report.arch, report.metrics, report.history
    draw_cell(arch, settings.num_nodes, run_dir / "cell.png")
    plot_search(history, report.probe_dev_acc, run_dir / "search.png")

    def cell(key: str, fmt: str) -> str:
        return format(metrics[key], fmt) if key in metrics else "—"


    lines = [
        f"# AdaBERT on {settings.task}",
        "",
        f"Search: {settings.search_epochs} epochs, γ = {settings.gamma}, β = {settings.beta}, T = {settings.temperature}, "
        f"τ {settings.tau_start} → {settings.tau_end}; retrain: {settings.retrain_epochs} epochs"
        f"{' from the searched weights' if settings.inherit_weights else ''}.",
        "",
        "| model | params (M) | GFLOPs/seq@128 | latency p50 (ms) | dev acc | test acc |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher | {metrics['teacher/params'] / 1e6:.2f} | — | {latency_cell(metrics, 'teacher/')} | "
        f"{cell('teacher/val/acc', '.4f')} | {cell('teacher/test/acc', '.4f')} |",
        f"| AdaBERT (K = {arch.num_cells}) | {metrics['params'] / 1e6:.2f} | {metrics['flops_per_seq@128'] / 1e9:.3f} | "
        f"{latency_cell(metrics)} | {cell('val/acc', '.4f')} | {cell('test/acc', '.4f')} |",
        "",
        f"{metrics['compression']:.1f}× smaller"
        + (f", {metrics['speedup']:.1f}× faster (p50, bs1 × {settings.latency_seq_len}, this device)" if "speedup" in metrics
           else "")
        + " than the teacher.",
        "",
        "## Derived cell",
        "",
        "```",
        arch.describe(settings.num_nodes),
        "```",
        "",
        "![cell](cell.png)",
        "",
        "## Search trajectory and the teacher's layer probes",
        "",
        "![search](search.png)",
        "",
        "Op counts in the cell: " + ", ".join(f"{o} {arch.genotype.count(o)}" for o in OP_NAMES if o in arch.genotype),
        "",
    ]  # fmt: skip
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    write_text_atomic(run_dir / "architecture.json", json.dumps(
        {"num_cells": arch.num_cells, "genotype": arch.genotype, "history": history}, indent=1))  # fmt: skip
    return path
