"""Noise floors: per objective, the smallest difference between two trials that is more than measurement noise
(in the objective's units). The front's selection ignores differences below it (_pareto.eps_dominates); the
strict front and the hypervolume do not.

Three ways to know a floor (``ObjectiveConfig.noise``):
- ``fixed``: a number given by hand, e.g. ``{name: val/mlm_acc, direction: max, noise: 0.005}``;
- ``metric``: each trial reports its own spread in a metric, e.g. ``latency/p50_spread`` (the spread of one
  latency measurement's round medians); with ``noise_relative`` the metric is a fraction of the value, so the
  trial's floor is metric x |value|. Two trials are compared with the mean of their two floors;
- ``seeds`` (noise=null): the baseline (or, without one, the first trial that finished) is re-run
  ``SearchConfig.noise_seeds`` more times, each with another seed (_repeats.py); the floor is the range
  (max - min) of the objective over the runs: |a - b| for the default two runs.

The range, not the standard deviation: with two runs it is the difference one re-seeding actually produced
(the std would be |a - b| / sqrt 2, a number no pair of runs showed), and ``latency/p50_spread`` is a range too
(of round medians), so every floor means the same thing: "re-measuring moved it this much". With more runs
the range grows: more repeats make the floor more conservative, not less. Measured floors (seeds and metric)
are multiplied by ``SearchConfig.noise_scale``; fixed ones are used as given.

Pure functions of the ledger's records, so floors after a resumed search are those of an uninterrupted one;
``noise.json`` in the sweep dir is rewritten from them after every trial (_reports.write_reports).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from hydra_plugins.pareto_sweeper._config import ObjectiveConfig, SearchConfig

REPEAT = "repeat"  # the ledger kind of a seed repeat (_repeats.py)
FORMAT = 1  # of noise.json


@dataclass
class NoiseFloor:
    """One objective's noise floor and how it was measured."""

    objective: str
    method: str  # fixed | metric | seeds | off (noise_seeds=0: the floor is 0, dominance is strict)
    floor: float | None  # objective units; metric: the median of the trials' own floors; None: not measured (0 used)
    detail: str  # how it was measured, in words (the report's table)
    metric: str | None = None  # metric: the noise metric's name
    relative: bool = False  # metric: the floor is metric x |value|
    scale: float = 1.0  # metric / seeds: noise_scale, already applied to ``floor``
    values: list[float] = field(default_factory=list)  # seeds: the objective in each run (the repeated trial first)
    runs: list[str] = field(default_factory=list)  # seeds: the runs' trial indices, as values
    per_trial: dict[str, float] = field(default_factory=dict)  # metric: each finished trial's own floor

    def of(self, metrics: dict[str, float]) -> float:
        """The floor for a trial that returned ``metrics`` (objective units; 0 when unknown)."""
        if self.method != "metric":
            return self.floor or 0.0
        own = metric_floor(self, metrics)
        return 0.0 if own is None else own


@dataclass
class NoiseFloors:
    """Every objective's floor (in the search's objective order)."""

    floors: dict[str, NoiseFloor] = field(default_factory=dict)

    def eps(self, metrics: dict[str, float]) -> list[float]:
        """A trial's floor per objective (objective units, which are also its loss units)."""
        return [f.of(metrics) for f in self.floors.values()]

    def pair(self, name: str, a: dict[str, float], b: dict[str, float]) -> float:
        """The floor two trials (their metrics) are compared with on objective ``name``: the mean of theirs."""
        floor = self.floors.get(name)
        return 0.0 if floor is None else (floor.of(a) + floor.of(b)) / 2

    def as_json(self) -> dict[str, Any]:
        """noise.json's content."""
        return {
            "format": FORMAT,
            "definition": "floor = the smallest difference on an objective that is more than noise (objective units); "
            "a trial dominates another only if it is nowhere worse by more than the floor and better by more than "
            "it somewhere (additive epsilon-dominance, made strict)",
            "objectives": {name: asdict(f) for name, f in self.floors.items()},
        }


def metric_floor(floor: NoiseFloor, metrics: dict[str, float]) -> float | None:
    """A trial's own floor from its noise metric (x |value| when relative, x scale); None when it lacks it."""
    spread = metrics.get(floor.metric or "")
    if spread is None or not math.isfinite(spread):
        return None
    if floor.relative:
        value = metrics.get(floor.objective)
        if value is None or not math.isfinite(value):
            return None
        spread *= abs(value)
    return spread * floor.scale


def measure_floors(cfg: SearchConfig, records: list) -> NoiseFloors:
    """Every objective's floor from the ledger's records (TrialRecords: trials, the baseline and repeats).

    Args:
        cfg: the search settings (objectives' ``noise``, ``noise_seeds``, ``noise_scale``).
        records: the search's records so far.
    Returns:
        The floors; a measured one is None (and 0 is used) until its runs have finished.
    """
    return NoiseFloors({o.name: _floor(o, cfg, records) for o in cfg.objectives})


def _floor(o: ObjectiveConfig, cfg: SearchConfig, records: list) -> NoiseFloor:
    if isinstance(o.noise, int | float):
        return NoiseFloor(o.name, "fixed", float(o.noise), f"fixed by hand ({cfg.key}.objectives: noise={o.noise:g})")
    if isinstance(o.noise, str):
        return _metric_floor(o, cfg, records)
    if cfg.noise_seeds == 0:
        return NoiseFloor(o.name, "off", None, f"not measured ({cfg.key}.noise_seeds=0): strict dominance")
    return _seed_floor(o, cfg, records)


def _metric_floor(o: ObjectiveConfig, cfg: SearchConfig, records: list) -> NoiseFloor:
    assert isinstance(o.noise, str)
    out = NoiseFloor(o.name, "metric", None, "", metric=o.noise, relative=o.noise_relative, scale=cfg.noise_scale)
    for r in records:
        if r.kind in ("trial", "baseline") and r.status == "ok":
            own = metric_floor(out, r.metrics)
            if own is not None:
                out.per_trial[str(r.trial)] = own
    if out.per_trial:
        out.floor = statistics.median(out.per_trial.values())
    of = f"{o.noise} x value" if o.noise_relative else o.noise
    scaled = f" x {cfg.noise_scale:g}" if cfg.noise_scale != 1 else ""
    out.detail = (f"each trial's own {of}{scaled} (pairs: the mean of their two); median over "
                  f"{len(out.per_trial)} trial(s)")  # fmt: skip
    return out


def _seed_floor(o: ObjectiveConfig, cfg: SearchConfig, records: list) -> NoiseFloor:
    repeats = [r for r in records if r.kind == REPEAT and r.value.get("repeat", 0) <= cfg.noise_seeds]
    source = repeats[0].value["repeat_of"] if repeats else None
    runs = [r for r in records if r.kind != REPEAT and str(r.trial) == source] + repeats
    runs = [r for r in runs if r.status == "ok" and o.name in r.objectives]
    out = NoiseFloor(o.name, "seeds", None, "", scale=cfg.noise_scale,
                     values=[r.objectives[o.name] for r in runs], runs=[str(r.trial) for r in runs])  # fmt: skip
    scaled = f" x {cfg.noise_scale:g}" if cfg.noise_scale != 1 else ""
    if len(out.values) >= 2:
        out.floor = (max(out.values) - min(out.values)) * cfg.noise_scale
        who = "the baseline" if source == "baseline" else f"trial {source}"
        out.detail = f"spread (max - min){scaled} over {len(runs)} runs of {who}, each with its own {cfg.seed_key}"
    else:
        out.detail = (f"not measured yet ({len(out.values)} of {cfg.noise_seeds + 1} runs finished): strict "
                      "dominance")  # fmt: skip
    return out
