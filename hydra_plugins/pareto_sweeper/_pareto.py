"""Pareto dominance, the non-dominated set and hypervolume (the reports that draw them: _reports.py).

Everything here works on *losses* (smaller is better): an objective to maximise enters negated.
Pure functions of the ledger's rows, so the front written after a resumed search is the same as
after an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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
