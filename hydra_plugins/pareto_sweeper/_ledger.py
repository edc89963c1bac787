"""A search's records and their persistence in the sweep dir.

- ``ledger.jsonl``: one line per finished trial (ok / failed / infeasible / unmeasured), rewritten atomically;
- ``pending.json``: trials in flight, re-launched with their same index and settings after a crash;
- ``search.json``: the settings, so a resumed search can refuse a changed space or objective.
Seed repeats (_repeats.py) are ledger records too (kind ``repeat``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra_plugins.pareto_sweeper._config import ObjectiveConfig, SearchConfig
from hydra_plugins.pareto_sweeper._noise import NoiseFloors
from hydra_plugins.pareto_sweeper._space import architecture_key

FORMAT = 1  # of search.json / ledger lines


@dataclass
class Trial:
    """One proposal: the optimiser's value, and the config assignments / overrides it stands for."""

    index: int | str  # the job number: its directory is <sweep dir>/<index> (the baseline is "baseline")
    kind: str  # trial | baseline | repeat (a seed repeat behind a noise floor, _repeats.py)
    name: str
    value: dict[str, Any]
    assigned: dict[str, Any]
    overrides: list[str]

    @property
    def key(self) -> str:
        """Equal keys run the same trial (the baseline and each repeat have their own: the index)."""
        return architecture_key(self.assigned) if self.kind == "trial" else str(self.index)


@dataclass
class TrialRecord:
    """One ledger line."""

    trial: int | str
    kind: str
    name: str
    status: str  # ok | failed | infeasible | unmeasured (its metrics flagged untrustworthy: SearchConfig.invalid_if)
    feasible: bool
    value: dict[str, Any]
    assigned: dict[str, Any]
    overrides: list[str]
    objectives: dict[str, float]
    metrics: dict[str, float]
    error: str | None
    started: str
    duration_s: float

    def losses(self, objectives: list[ObjectiveConfig]) -> list[float] | None:
        """The objectives as losses (smaller is better), or None for a failed, infeasible or unmeasured trial."""
        if self.status != "ok" or not self.feasible:
            return None
        return [o.loss(self.objectives[o.name]) for o in objectives]


@dataclass
class SearchResult:
    """Where a search stands: every record, the front, its reference point and hypervolume, the noise floors."""

    records: list[TrialRecord]  # the baseline first (if any), then seed repeats, then trials in index order
    front: list[TrialRecord]  # the non-dominated feasible trials (baseline excluded): strict Pareto dominance
    reference: list[float] | None  # in loss space
    hypervolume: float  # of the strict front
    sweep_dir: Path
    # The front trials no other front trial beats by more than the noise floors (_pareto.distinguishable): what
    # a selection picks from. [] when built without floors.
    distinguishable: list[TrialRecord] = field(default_factory=list)
    noise: NoiseFloors = field(default_factory=NoiseFloors)


@dataclass
class SavedSearch:
    """What an earlier run of the same search left in the sweep dir."""

    records: list[TrialRecord] = field(default_factory=list)
    pending: list[Trial] = field(default_factory=list)
    reference: list[float] | None = None


def now() -> str:
    """The time as the ledger writes it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically (a kill leaves the old file or the new one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def clean_metrics(raw: Any) -> dict[str, float]:
    """A trial's return value -> {name: float}; anything that is not a number is dropped.

    Raises:
        TypeError: the trial returned something other than a mapping (or None).
    """
    if raw is None:
        return {}
    if not hasattr(raw, "items"):
        raise TypeError(
            f"a trial must return a dict of metrics (run.py's recipes do), got {type(raw).__name__}"
        )
    out = {}
    for k, v in raw.items():
        v = v.item() if hasattr(v, "item") else v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class Ledger:
    """The sweep dir's files for one search (see the module docstring)."""

    def __init__(self, sweep_dir: Path, cfg: SearchConfig) -> None:
        self.dir = sweep_dir
        self.cfg = cfg
        self.path = sweep_dir / "ledger.jsonl"

    def load(self) -> SavedSearch:
        """Previous records and in-flight trials, after checking the sweep dir holds this same search.

        Raises:
            ValueError: the dir holds a search with other settings, or a ledger line is unreadable.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = SavedSearch()
        meta_path = self.dir / "search.json"
        identity = json.loads(json.dumps(self.cfg.identity(), default=str))
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("identity") != identity:
                changed = sorted(k for k in identity if meta.get("identity", {}).get(k) != identity[k])
                raise ValueError(
                    f"{self.dir} holds a different search (changed: {', '.join(changed)}); resume it with the "
                    "same settings, or give a new sweep dir (hydra.sweep.dir=... / recipe.search_dir=...)"
                )
            saved.reference = meta.get("reference")
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        saved.records.append(TrialRecord(**json.loads(line)))
                    except (json.JSONDecodeError, TypeError) as err:
                        raise ValueError(f"{self.path}:{n} is not a ledger line ({err}); fix or remove it") from err
        pending_path = self.dir / "pending.json"
        if pending_path.exists():
            saved.pending = [Trial(**p) for p in json.loads(pending_path.read_text())]
        return saved

    def save(self, records: list[TrialRecord], in_flight: list[Trial], reference: list[float] | None) -> None:
        """Ledger, in-flight list and search.json, each replaced atomically (a kill leaves old or new).

        Only the main thread calls this (worker threads only run trials), so it needs no lock."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(asdict(r), sort_keys=True, default=str) + "\n" for r in records))
        os.replace(tmp, self.path)
        write_json(self.dir / "pending.json", [asdict(t) for t in in_flight])
        write_json(
            self.dir / "search.json",
            {"format": FORMAT, "identity": self.cfg.identity(), "reference": reference, "budget": self.cfg.budget},
        )


def make_record(
    cfg: SearchConfig, trial: Trial, metrics: dict, error: str | None, started: str, duration: float
) -> TrialRecord:
    """A ledger record of a trial that returned ``metrics`` (or raised ``error``): failed when an objective is
    missing or not finite, infeasible when a constraint is violated (or its metric missing), unmeasured when it
    set one of ``cfg.invalid_if`` (then neither its objectives nor its constraints are read from it)."""
    objectives, status = {}, "ok" if error is None else "failed"
    flagged = invalid_flags(cfg, metrics)
    if error is None and flagged:
        status = "unmeasured"
        error = (f"metrics flagged untrustworthy by the trial: {flagged} (e.g. latency measured under contention); "
                 "not told to the optimiser, re-run on resume")  # fmt: skip
    if status == "ok":
        missing = [o.name for o in cfg.objectives if o.name not in metrics]
        bad = [
            o.name
            for o in cfg.objectives
            if o.name in metrics and not math.isfinite(metrics[o.name])
        ]
        if missing:
            status, error = (
                "failed",
                f"the trial returned no {missing} (it returned: {sorted(metrics)[:12]}...)",
            )
        elif bad:
            status, error = "failed", f"objective(s) {bad} are NaN/inf"
        else:
            objectives = {o.name: metrics[o.name] for o in cfg.objectives}
    feasible = status == "ok" and violations(cfg, metrics) == {}
    if status == "ok" and not feasible:
        error = f"violates {violations(cfg, metrics)}"
    return TrialRecord(
        trial=trial.index, kind=trial.kind, name=trial.name, status=status, feasible=feasible,
        value=trial.value, assigned=trial.assigned, overrides=trial.overrides, objectives=objectives,
        metrics=metrics, error=error, started=started, duration_s=round(duration, 3),
    )  # fmt: skip

def invalid_flags(cfg: SearchConfig, metrics: dict[str, float]) -> dict[str, float]:
    """The ``cfg.invalid_if`` flags the metrics set (present and non-zero, NaN included)."""
    return {n: metrics[n] for n in cfg.invalid_if if n in metrics and metrics[n] != 0}


def violations(cfg: SearchConfig, metrics: dict[str, float], partial: bool = False) -> dict[str, Any]:
    """Constraints the metrics break. A constraint metric that is missing or NaN breaks it too
    (a misspelt name must not leave the search unconstrained), except in a partial (pre-training) check."""
    out: dict[str, Any] = {}
    for c in cfg.constraints:
        if c.name not in metrics:
            if not partial:
                out[c.name] = "missing from the trial's metrics"
        elif not math.isfinite(metrics[c.name]) or c.violation(metrics[c.name]) > 0:
            out[c.name] = metrics[c.name]
    return out
