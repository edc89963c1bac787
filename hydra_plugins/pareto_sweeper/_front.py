"""A search's result from its records: the strict Pareto front, the distinguishable front (the front trials no
other beats by more than the noise floors), the noise floors, the reference point and the hypervolume.

A pure function of the ledger, so the result after a resumed search is that of an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

from hydra_plugins.pareto_sweeper import _pareto as pareto
from hydra_plugins.pareto_sweeper._config import SearchConfig
from hydra_plugins.pareto_sweeper._ledger import SearchResult, TrialRecord
from hydra_plugins.pareto_sweeper._noise import measure_floors


def search_result(
    cfg: SearchConfig, records: list[TrialRecord], reference: list[float] | None, sweep_dir: Path
) -> SearchResult:
    """The search so far.

    Args:
        cfg: its settings.
        records: the baseline, repeats, then trials (``ParetoSearch.ordered_records``).
        reference: the hypervolume's reference point in loss space; None: the nadir of the finished trials,
            50% worse (no baseline and no explicit ``ref`` yet).
        sweep_dir: where it lives.
    """
    trials = [r for r in records if r.kind == "trial"]
    losses = [r.losses(cfg.objectives) for r in trials]
    ok = [i for i, x in enumerate(losses) if x is not None]
    points = [losses[i] for i in ok]
    front = pareto.non_dominated(points)
    floors = measure_floors(cfg, records)
    kept = pareto.distinguishable(points, front, [floors.eps(trials[i].metrics) for i in ok])
    if reference is None and ok:
        reference = [max(p[k] for p in points) for k in range(len(cfg.objectives))]
        reference = [x + 0.5 * max(abs(x), 1e-6) for x in reference]
    hv = pareto.hypervolume(points, reference) if reference and ok else 0.0  # strict: a number, not a selection
    return SearchResult(records, [trials[ok[i]] for i in front], reference, hv, sweep_dir,
                        distinguishable=[trials[ok[i]] for i in kept], noise=floors)  # fmt: skip
