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


def eps_dominates(a: Sequence[float], b: Sequence[float], eps: Sequence[float]) -> bool:
    """a dominates b by more than the noise ``eps`` (per loss, >= 0, in the losses' units).

    Additive epsilon-dominance (Laumanns, Thiele, Deb & Zitzler 2002, "Combining convergence and diversity in
    evolutionary multiobjective optimization": a is nowhere worse than b by more than eps_k) made strict: a must
    also be better than b by more than eps_j on at least one loss. So a difference below the floor counts as a tie
    both ways: it neither makes a point dominate nor saves it from being dominated, and two points within noise
    of each other everywhere never remove each other. With eps = 0 it is ``dominates``.
    """
    return all(x <= y + e for x, y, e in zip(a, b, eps)) and any(x < y - e for x, y, e in zip(a, b, eps))


def distinguishable(
    points: Sequence[Sequence[float]], front: Sequence[int], eps: Sequence[Sequence[float]]
) -> list[int]:
    """The front points that no other front point eps-dominates (``eps_dominates``).

    Args:
        points: losses of every point; front: indices of the strict front (``non_dominated``) into points.
        eps: each point's own noise floor per loss; a pair is compared with the mean of the two (so two points
            whose error bars of total length eps overlap on an axis are within noise on it).
    Returns:
        Indices into points, a subset of ``front``. With three or more objectives the relation can cycle (2-D
        cannot: each step would need a gain above the floor that the others give back), leaving no point; the
        strict front is returned then.
    """
    def pair(i: int, j: int) -> list[float]:
        return [(x + y) / 2 for x, y in zip(eps[i], eps[j])]

    kept = [i for i in front if not any(eps_dominates(points[j], points[i], pair(i, j)) for j in front if j != i)]
    return kept or list(front)


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
