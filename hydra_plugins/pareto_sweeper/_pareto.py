"""Pareto dominance, the non-dominated set, hypervolume, and the front's CSV and plot.

Everything here works on *losses* (smaller is better): an objective to maximise enters negated.
Pure functions of the ledger's rows, so the front written after a resumed search is the same as
after an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a Pareto-dominates b: no worse in every loss and strictly better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (duplicates of a front point all stay)."""
    return [
        i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (points beyond it add nothing)."""
    inside = [list(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not inside:
        return 0.0
    if len(reference) == 2:  # exact sweep in 2-D (the common case, and fast)
        front = sorted(inside[i] for i in non_dominated(inside))
        volume, prev_y = 0.0, reference[1]
        for x, y in front:
            if y < prev_y:
                volume += (reference[0] - x) * (prev_y - y)
                prev_y = y
        return volume
    import numpy as np
    from nevergrad.optimization.multiobjective import HypervolumeIndicator

    return float(
        HypervolumeIndicator(np.asarray(reference, dtype=float)).compute([np.asarray(p) for p in inside])
    )


def hypervolume_curve(losses: Sequence[Sequence[float] | None], reference: Sequence[float]) -> list[float]:
    """Hypervolume of the first t trials, for t = 1..n (None: a failed or infeasible trial adds nothing)."""
    seen, curve = [], []
    for loss in losses:
        if loss is not None and all(math.isfinite(x) for x in loss):
            seen.append(loss)
        curve.append(hypervolume(seen, reference) if seen else 0.0)
    return curve


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


def plot_front(
    path: Path,
    points: list[tuple[float, float]],
    front: list[int],
    labels: tuple[str, str],
    baseline: tuple[float, float] | None = None,
    failed: list[tuple[float, float]] | None = None,
    title: str = "",
) -> None:
    """All trials (grey), the front (red, joined as a staircase), the baseline (black star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    if points:
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=22, c="0.6", label=f"trials ({len(points)})", zorder=2)
    if failed:
        xs, ys = zip(*failed)
        ax.scatter(xs, ys, s=22, marker="x", c="tab:orange", label=f"infeasible ({len(failed)})", zorder=2)
    if front:
        pts = sorted(points[i] for i in front)
        ax.plot(
            *zip(*pts),
            "-o",
            c="tab:red",
            ms=6,
            drawstyle="steps-post",
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
    if baseline is not None:
        ax.scatter([baseline[0]], [baseline[1]], s=160, marker="*", c="k", label="baseline", zorder=4)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
