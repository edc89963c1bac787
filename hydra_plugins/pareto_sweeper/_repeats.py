"""The seed repeats behind a measured noise floor (_noise.py): which trial to repeat, and the repeats to run.

A repeat re-runs one trial's exact settings with another seed: the baseline, or (no baseline, or the baseline
did not finish ok) the lowest-index trial that finished ok. Repeat ``k`` of source ``s`` is trial index
``"<s>_seed<k>"`` (its own job dir), kind ``repeat``, with ``<seed_key>=<the source's seed + k>`` added to its
assignments and overrides. Repeats are ledger records like any trial, so a resumed search neither re-runs
finished ones nor loses them, and re-launches one that was in flight; they are not trials of the search: they
do not count against the budget, are never told to the optimiser, and are never on the front.
"""

from __future__ import annotations

from collections.abc import Iterable

from hydra_plugins.pareto_sweeper._config import SearchConfig
from hydra_plugins.pareto_sweeper._ledger import Trial, TrialRecord
from hydra_plugins.pareto_sweeper._noise import REPEAT


def plan_repeats(
    cfg: SearchConfig, records: Iterable[TrialRecord], busy: Iterable[Trial], has_baseline: bool, base_seed: int
) -> list[Trial]:
    """The repeats still to launch (none once they are recorded or running).

    Args:
        cfg: the settings (``repeats``: how many; ``seed_key``).
        records: every finished record; busy: trials queued or in flight.
        has_baseline: the search runs a baseline: until it finished, nothing is repeated.
        base_seed: the seed the trials run with (their config's ``seed_key``), unless the source's own overrides
            set it; repeat k runs with that seed + k.
    """
    if cfg.repeats == 0:
        return []
    records, busy = list(records), list(busy)
    source = repeat_source(records, busy, has_baseline)
    if source is None:
        return []
    taken = {str(r.trial) for r in records} | {str(t.index) for t in busy}
    wanted = [repeat_trial(source, k, cfg.seed_key, base_seed) for k in range(1, cfg.repeats + 1)]
    return [t for t in wanted if t.index not in taken]


def repeat_source(records: list[TrialRecord], busy: list[Trial], has_baseline: bool) -> TrialRecord | None:
    """The record to repeat: the one earlier repeats repeated, else the baseline, else the first ok trial."""
    earlier = [r.value["repeat_of"] for r in [*records, *busy] if r.kind == REPEAT]
    if earlier:
        return next((r for r in records if r.kind != REPEAT and str(r.trial) == earlier[0]), None)
    base = next((r for r in records if r.kind == "baseline"), None)
    if base is not None and base.status == "ok":
        return base
    if has_baseline and base is None:
        return None  # the baseline has not finished: it is the one to repeat
    ok = [r for r in records if r.kind == "trial" and r.status == "ok"]
    return min(ok, key=lambda r: int(r.trial)) if ok else None


def repeat_trial(source: TrialRecord, k: int, seed_key: str, base_seed: int) -> Trial:
    """Repeat ``k`` (1, 2, ...) of ``source``: its settings with ``seed_key`` = its seed + k."""
    own = _seed_of(source.overrides, seed_key)
    seed = (base_seed if own is None else own) + k
    same = (f"{seed_key}=", f"+{seed_key}=", f"++{seed_key}=")
    return Trial(
        index=f"{source.trial}_seed{k}",
        kind=REPEAT,
        name=f"{source.name} (seed {seed})",
        value={"repeat_of": str(source.trial), "repeat": k},
        assigned={**source.assigned, seed_key: seed},
        overrides=[o for o in source.overrides if not o.startswith(same)] + [f"{seed_key}={seed}"],
    )


def _seed_of(overrides: list[str], seed_key: str) -> int | None:
    """The seed a trial's own overrides set (the last one wins, as in Hydra), if any and an integer."""
    for o in reversed(overrides):
        key, _, value = o.lstrip("+").partition("=")
        if key == seed_key:
            try:
                return int(value)
            except ValueError:
                return None
    return None
