"""The search loop (AutoDistill Fig. 1): ask nevergrad for a student -> check hard constraints before
training -> train it (a Hydra job, or an in-process call) -> tell nevergrad every objective -> repeat.

``ParetoSearch`` is shared by the Hydra sweeper (``hydra/sweeper=pareto``, trials are launcher jobs)
and by ``recipe=autodistill`` (trials are in-process flash distillations). Everything it learns goes
to the sweep dir as it happens:

- ``ledger.jsonl``: one line per finished trial (ok / failed / infeasible), rewritten atomically;
- ``pending.json``: trials in flight. After a crash, re-running with the same sweep dir re-tells the
  ledger to the optimiser, re-launches the pending trials with their *same* index and settings (so a
  distillation resumes from its own checkpoint), and carries on: no trial is lost or run twice;
- ``search.json``: the settings, so a resumed search can refuse a changed space or objective;
- ``pareto.csv``, ``pareto.png``, ``hypervolume.csv``: refreshed after every trial.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra_plugins.pareto_sweeper import _pareto as pareto
from hydra_plugins.pareto_sweeper._space import (
    SpaceConfig,
    architecture_key,
    assignments,
    describe,
    parametrization,
    to_overrides,
)

log = logging.getLogger(__name__)

# Short names for the optimisers the paper compares (§4.3); any other nevergrad registry name also works.
OPTIMIZERS = {
    "bo": "BO",  # Bayesian optimisation (a GP with expected improvement), the paper's choice
    "random": "RandomSearch",
    "de": "DE",  # differential evolution (the paper compares a firefly algorithm: also population-based)
    "twopointsde": "TwoPointsDE",
    "cma": "CMA",
    "pso": "PSO",
    "ngopt": "NGOpt",  # nevergrad's own choice for the space
}
DIRECTIONS = ("max", "min")
FORMAT = 1  # of search.json / ledger lines


@dataclass
class ObjectiveConfig:
    """A metric the trial returns, and whether more (max) or less (min) is better."""

    name: str
    direction: str = "max"
    # The worst value still of interest: the hypervolume's reference point, and where nevergrad's
    # multi-objective scalarisation is anchored. null: 50% worse than the baseline (or the first trial).
    ref: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction must be max or min, got {self.direction!r}")

    def loss(self, value: float) -> float:
        return -value if self.direction == "max" else value


@dataclass
class ConstraintConfig:
    """A hard limit on a metric. ``params``, ``flops_per_seq@128`` and ``latency/*`` are known before
    training (the student is built and timed, not trained): violating proposals are never trained."""

    name: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise ValueError(f"constraint {self.name!r}: give max and/or min")

    def violation(self, value: float) -> float:
        """0 when satisfied, else how far outside, relative to the limit."""
        over = 0.0
        if self.max is not None and value > self.max:
            over = (value - self.max) / max(abs(self.max), 1e-12)
        if self.min is not None and value < self.min:
            over = max(over, (self.min - value) / max(abs(self.min), 1e-12))
        return over


def default_objectives() -> list[ObjectiveConfig]:
    return [ObjectiveConfig("val/mlm_acc", "max"), ObjectiveConfig("latency/p50_ms", "min")]


@dataclass
class SearchConfig:
    """How to search. The Hydra sweeper's config (``hydra.sweeper.*``) and recipe=autodistill's ``search``."""

    optimizer: str = "bo"  # bo | random | de | twopointsde | cma | pso | ngopt | any nevergrad name
    budget: int = 20  # trained trials (finished or failed); the baseline and infeasible proposals are extra
    num_workers: int = 1  # trials in flight at once (needs a parallel launcher, e.g. submitit)
    seed: int = 0
    space: SpaceConfig = field(default_factory=SpaceConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=default_objectives)
    constraints: list[ConstraintConfig] = field(default_factory=list)
    max_proposals: int | None = None  # stop asking after this many (null: 20 x budget)

    def __post_init__(self) -> None:
        # Built from Hydra's DictConfig, the nested entries may still be plain dicts.
        if isinstance(self.space, dict):
            self.space = SpaceConfig(**self.space)
        self.objectives = [
            o if isinstance(o, ObjectiveConfig) else ObjectiveConfig(**o) for o in self.objectives
        ]
        self.constraints = [
            c if isinstance(c, ConstraintConfig) else ConstraintConfig(**c) for c in self.constraints
        ]
        if self.optimizer.lower() not in OPTIMIZERS:
            import nevergrad as ng

            if self.optimizer not in ng.optimizers.registry:
                raise ValueError(
                    f"search optimizer={self.optimizer!r} is unknown: use one of {sorted(OPTIMIZERS)} "
                    "or a nevergrad optimizer name (nevergrad.optimizers.registry)"
                )
        if self.budget < 1:
            raise ValueError(f"search budget must be >= 1 trial, got {self.budget}")
        if self.num_workers < 1:
            raise ValueError(f"search num_workers must be >= 1, got {self.num_workers}")
        if not self.objectives:
            raise ValueError("search objectives: give at least one {name, direction}")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"search objectives name a metric twice: {names}")

    @property
    def proposal_limit(self) -> int:
        return self.max_proposals or 20 * self.budget

    def identity(self) -> dict:
        """What a resumed search must share with the sweep dir it resumes (the budget may grow)."""
        d = asdict(self)
        for k in ("budget", "num_workers", "max_proposals"):
            d.pop(k)
        return d


@dataclass
class Trial:
    """One proposal: the optimiser's value, and the config assignments / overrides it stands for."""

    index: int | str  # the job number: its directory is <sweep dir>/<index> (the baseline is "baseline")
    kind: str  # trial | baseline
    name: str
    value: dict[str, Any]
    assigned: dict[str, Any]
    overrides: list[str]

    @property
    def key(self) -> str:
        return architecture_key(self.assigned) if self.kind == "trial" else "baseline"


@dataclass
class TrialRecord:
    """One ledger line."""

    trial: int | str
    kind: str
    name: str
    status: str  # ok | failed | infeasible
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
        if self.status != "ok" or not self.feasible:
            return None
        return [o.loss(self.objectives[o.name]) for o in objectives]


@dataclass
class SearchResult:
    records: list[TrialRecord]  # the baseline first (if any), then trials in index order
    front: list[TrialRecord]  # the non-dominated feasible trials (baseline excluded)
    reference: list[float] | None  # in loss space
    hypervolume: float
    sweep_dir: Path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _clean_metrics(raw: Any) -> dict[str, float]:
    """A trial's return value -> {name: float}; anything that is not a number is dropped."""
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


class ParetoSearch:
    """Multi-objective ask/tell over a sweep dir; see the module docstring.

    Args:
        cfg: what to search and how.
        sweep_dir: where the ledger and reports live; re-using it resumes.
        launch: runs one trial and returns its metrics (raises on failure). Called from worker threads
            when ``cfg.num_workers > 1``.
        pretrial: ``(trial, names) -> {name: value}`` for the constraint metrics it can compute without
            training (params, FLOPs, measured latency); None: every constraint is checked after training.
        baseline: a reference trial run first (not told to the optimiser): marked on the plot, and the
            default reference point.
    """

    def __init__(
        self,
        cfg: SearchConfig,
        sweep_dir: str | Path,
        launch: Callable[[Trial], Any],
        pretrial: Callable[[Trial, set[str]], dict[str, float]] | None = None,
        baseline: Trial | None = None,
        on_update: Callable[[SearchResult], None] | None = None,
        reports: bool = True,
        progress: str = "bar",
    ) -> None:
        self.cfg = cfg
        self.dir = Path(sweep_dir)
        self.launch = launch
        self.pretrial = pretrial
        self.baseline = baseline
        self.on_update = on_update
        self.reports = reports  # False: only the ledger (benchmarks that run thousands of instant trials)
        # bar: a rich progress bar (not while the trial itself draws one in this terminal) | log | none
        self.progress = progress
        self.records: dict[int | str, TrialRecord] = {}
        self.reference: list[float] | None = self._explicit_reference()
        self._told_reference = False

    # ---- persistence -------------------------------------------------------------------------
    @property
    def ledger_path(self) -> Path:
        return self.dir / "ledger.jsonl"

    def _explicit_reference(self) -> list[float] | None:
        refs = [o.ref for o in self.cfg.objectives]
        if all(r is not None for r in refs):
            return [o.loss(r) for o, r in zip(self.cfg.objectives, refs)]
        return None

    def _load(self) -> tuple[list[TrialRecord], list[dict]]:
        """Previous ledger and in-flight trials, after checking the sweep dir holds this same search."""
        self.dir.mkdir(parents=True, exist_ok=True)
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
            if self.reference is None and meta.get("reference") is not None:
                self.reference = meta["reference"]
        records = []
        if self.ledger_path.exists():
            for n, line in enumerate(self.ledger_path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(TrialRecord(**json.loads(line)))
                    except (json.JSONDecodeError, TypeError) as err:
                        raise ValueError(
                            f"{self.ledger_path}:{n} is not a ledger line ({err}); fix or remove it"
                        ) from err
        pending_path = self.dir / "pending.json"
        pending = json.loads(pending_path.read_text()) if pending_path.exists() else []
        return records, pending

    def _save(self, in_flight: dict[int | str, Trial]) -> None:
        """Ledger, in-flight list and search.json, each replaced atomically (a kill leaves old or new).

        Only the main thread calls this (worker threads only run trials), so it needs no lock."""
        ordered = self.ordered_records()
        tmp = self.ledger_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(asdict(r), sort_keys=True, default=str) + "\n" for r in ordered))
        os.replace(tmp, self.ledger_path)
        _write_json(self.dir / "pending.json", [asdict(t) for t in in_flight.values()])
        _write_json(
            self.dir / "search.json",
            {
                "format": FORMAT,
                "identity": self.cfg.identity(),
                "reference": self.reference,
                "budget": self.cfg.budget,
            },
        )

    def ordered_records(self) -> list[TrialRecord]:
        base = [r for r in self.records.values() if r.kind == "baseline"]
        trials = sorted((r for r in self.records.values() if r.kind == "trial"), key=lambda r: int(r.trial))
        return base + trials

    # ---- optimiser ---------------------------------------------------------------------------
    def _make_optimizer(self):
        import warnings

        import nevergrad as ng

        name = OPTIMIZERS.get(self.cfg.optimizer.lower(), self.cfg.optimizer)
        param = parametrization(self.cfg.space, self.cfg.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BO warns that discrete spaces suit it less: known, chosen
            if name == "BO":
                # A little observation noise in the GP: categorical factors make the objective step-like.
                opt = ng.optimizers.ParametrizedBO(gp_parameters={"alpha": 1e-3})(
                    parametrization=param, budget=self.cfg.proposal_limit, num_workers=self.cfg.num_workers
                )
            else:
                opt = ng.optimizers.registry[name](
                    parametrization=param, budget=self.cfg.proposal_limit, num_workers=self.cfg.num_workers
                )
        return opt

    def _tell(self, opt, candidate, record: TrialRecord | None) -> None:
        """Tell nevergrad a trial's losses; failed / infeasible ones get a penalty beyond the reference."""
        import warnings

        import nevergrad as ng

        losses = record.losses(self.cfg.objectives) if record is not None else None
        multi = len(self.cfg.objectives) > 1
        if losses is not None and self.reference is None:
            self.reference = self._reference_from(losses)  # no baseline: anchored on the first good trial
        if losses is None:
            if self.reference is None:
                return  # nothing sensible to tell yet: the proposal simply stays un-told
            losses = [r + 0.5 * max(abs(r), 1e-6) for r in self.reference]
        if multi and not self._told_reference:
            opt.tell(ng.p.MultiobjectiveReference(), list(self.reference))
            self._told_reference = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.tell(candidate, losses if multi else losses[0])

    def _ask_as(self, opt, value: dict[str, Any]):
        """The candidate for a known value (replaying the ledger): suggest it, then ask it back."""
        opt.suggest(value)
        return opt.ask()

    # ---- the loop ----------------------------------------------------------------------------
    def _trial(self, index: int, value: dict[str, Any]) -> Trial:
        assigned = assignments(self.cfg.space, value)
        return Trial(
            index=index,
            kind="trial",
            name=describe(self.cfg.space, assigned),
            value=_jsonable(value),
            assigned=assigned,
            overrides=to_overrides(assigned),
        )

    def _run_one(self, trial: Trial) -> TrialRecord:
        """Launch a trial and turn whatever happens into a ledger record (never raises)."""
        started, t0 = _now(), time.perf_counter()
        error, metrics = None, {}
        try:
            metrics = _clean_metrics(self.launch(trial))
        except Exception as err:  # noqa: BLE001 - a failing trial is data, the search goes on
            error = f"{type(err).__name__}: {err}"
            log.warning("trial %s (%s) failed: %s", trial.index, trial.name, error)
            log.debug("%s", traceback.format_exc())
        return self._record(trial, metrics, error, started, time.perf_counter() - t0)

    def _record(
        self, trial: Trial, metrics: dict, error: str | None, started: str, duration: float
    ) -> TrialRecord:
        objectives, status = {}, "ok" if error is None else "failed"
        if error is None:
            missing = [o.name for o in self.cfg.objectives if o.name not in metrics]
            bad = [
                o.name
                for o in self.cfg.objectives
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
                objectives = {o.name: metrics[o.name] for o in self.cfg.objectives}
        feasible = status == "ok" and self._violations(metrics) == {}
        if status == "ok" and not feasible:
            error = f"violates {self._violations(metrics)}"
        return TrialRecord(
            trial=trial.index, kind=trial.kind, name=trial.name, status=status, feasible=feasible,
            value=trial.value, assigned=trial.assigned, overrides=trial.overrides, objectives=objectives,
            metrics=metrics, error=error, started=started, duration_s=round(duration, 3),
        )  # fmt: skip

    def _violations(self, metrics: dict[str, float], partial: bool = False) -> dict[str, Any]:
        """Constraints the metrics break. A constraint metric that is missing or NaN breaks it too
        (a misspelt name must not leave the search unconstrained), except in a partial (pre-training) check."""
        out: dict[str, Any] = {}
        for c in self.cfg.constraints:
            if c.name not in metrics:
                if not partial:
                    out[c.name] = "missing from the trial's metrics"
            elif not math.isfinite(metrics[c.name]) or c.violation(metrics[c.name]) > 0:
                out[c.name] = metrics[c.name]
        return out

    def _precheck(self, trial: Trial) -> TrialRecord | None:
        """Constraints decidable before training: a record of the infeasible proposal, or None to train it."""
        if not self.cfg.constraints or self.pretrial is None:
            return None
        started, t0 = _now(), time.perf_counter()
        try:
            known = _clean_metrics(self.pretrial(trial, {c.name for c in self.cfg.constraints}))
        except ValueError as err:  # an impossible student (e.g. heads do not divide the width): not trained
            rec = self._record(trial, {}, f"{type(err).__name__}: {err}", started, time.perf_counter() - t0)
            rec.status, rec.feasible = "infeasible", False
            return rec
        # Anything else (no teacher config, a broken device) is not the proposal's fault: it stops the search.
        violated = self._violations(known, partial=True)
        if not violated:
            return None
        rec = self._record(trial, known, None, started, time.perf_counter() - t0)
        rec.status, rec.feasible = "infeasible", False
        rec.error = f"not trained: violates {violated}"
        return rec

    def run(self) -> SearchResult:
        previous, pending = self._load()
        for rec in previous:
            self.records[rec.trial] = rec
        opt = self._make_optimizer()
        # Replay: the optimiser sees every finished trial again, in order; nothing is re-run.
        replayed = sorted((r for r in previous if r.kind == "trial"), key=lambda r: int(r.trial))
        for rec in replayed:
            self._tell(opt, self._ask_as(opt, rec.value), rec)
        if previous:
            log.info(
                "resuming %s: %d trials in the ledger, %d were in flight",
                self.dir,
                len(previous),
                len(pending),
            )

        seen = {architecture_key(r.assigned): r for r in replayed}
        in_flight: dict[int | str, Trial] = {}
        candidates: dict[int | str, Any] = {}
        resubmit = [Trial(**p) for p in pending if p["index"] not in self.records]
        for t in resubmit:
            if t.kind == "trial":
                candidates[t.index] = self._ask_as(opt, t.value)
        next_index = 1 + max(
            [int(r.trial) for r in replayed] + [t.index for t in resubmit if t.kind == "trial"] + [-1]
        )
        proposals = len(replayed)
        repeats = 0  # proposals of students already evaluated (a converging optimiser makes many)
        workers = self.cfg.num_workers
        progress = _Progress(self.cfg.budget, self._trained(), self.progress)

        def trained_or_running() -> int:
            return self._trained() + sum(1 for t in in_flight.values() if t.kind == "trial")

        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else _Inline()
        futures: dict[Future, Trial] = {}

        def submit(trial: Trial) -> None:
            in_flight[trial.index] = trial
            self._save(in_flight)
            progress.start(trial)
            futures[pool.submit(self._run_one, trial)] = trial

        def finish(fut: Future) -> None:
            trial = futures.pop(fut)
            rec = fut.result()
            self.records[trial.index] = rec
            in_flight.pop(trial.index, None)
            self._save(in_flight)  # first: whatever happens next, this result is on disk
            if trial.kind == "baseline":
                self._set_reference_from(rec)
                if trial.assigned:  # a proposal of the baseline's own student reuses its result
                    seen[architecture_key(trial.assigned)] = rec
            else:
                seen[trial.key] = rec
                self._tell(opt, candidates.pop(trial.index), rec)
            result = self.result()
            progress.finish(rec, result)
            try:
                if self.reports:
                    write_reports(result, self.cfg)
                if self.on_update is not None:
                    self.on_update(result)
            except Exception as err:  # noqa: BLE001 - a report is not worth the search
                log.warning("could not refresh the reports in %s: %s", self.dir, err)

        try:
            # The baseline first (once), then trials that were in flight when the last run stopped.
            if (
                self.baseline is not None
                and "baseline" not in self.records
                and "baseline" not in {t.index for t in resubmit}
            ):
                resubmit.insert(0, self.baseline)
            for t in resubmit:
                submit(t)
            while True:
                while (
                    len(futures) < workers
                    and trained_or_running() < self.cfg.budget
                    and proposals < self.cfg.proposal_limit
                ):
                    if any(t.kind == "baseline" for t in in_flight.values()) and self.reference is None:
                        break  # the baseline sets the default reference point: wait for it
                    candidate = opt.ask()
                    trial = self._trial(next_index, candidate.value)
                    if trial.key in {t.key for t in in_flight.values()}:
                        break  # proposed again while it runs: wait for its result rather than burn proposals
                    proposals += 1
                    if trial.key in seen:
                        self._tell(opt, candidate, seen[trial.key])  # evaluated already: never trained twice
                        repeats += 1
                        continue
                    rejected = self._precheck(trial)
                    next_index += 1
                    if rejected is not None:
                        log.info("trial %d (%s): %s", trial.index, trial.name, rejected.error)
                        self.records[trial.index] = rejected
                        seen[trial.key] = rejected
                        self._save(in_flight)
                        self._tell(opt, candidate, rejected)
                        continue
                    candidates[trial.index] = candidate
                    submit(trial)
                if not futures:
                    break
                done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(fut)
            if proposals >= self.cfg.proposal_limit and self._trained() < self.cfg.budget:
                log.warning(
                    "search stopped after %d proposals with %d of %d trials trained: %d proposals repeated students "
                    "already evaluated and %d were infeasible (raise max_proposals, relax the constraints, or use an "
                    "optimizer that keeps exploring)",
                    proposals, self._trained(), self.cfg.budget, repeats,
                    sum(r.status == "infeasible" for r in self.records.values()),
                )  # fmt: skip
        except BaseException:
            # Ctrl-C, a kill signal turned exception, a bug: keep every finished result, leave the rest pending
            # (pending.json) for the next run, and do not wait for trials still running.
            for fut in [f for f in futures if f.done() and f.exception() is None]:
                finish(fut)
            self._save(in_flight)
            pool.shutdown(wait=False, cancel_futures=True)
            progress.close()
            raise
        pool.shutdown(wait=True)
        progress.close()
        result = self.result()
        write_reports(result, self.cfg)
        return result

    def _trained(self) -> int:
        return sum(1 for r in self.records.values() if r.kind == "trial" and r.status in ("ok", "failed"))

    def _set_reference_from(self, rec: TrialRecord) -> None:
        if self.reference is None and rec.status == "ok" and rec.feasible:
            self.reference = self._reference_from(
                [o.loss(rec.objectives[o.name]) for o in self.cfg.objectives]
            )

    def _reference_from(self, losses: list[float]) -> list[float]:
        """Each objective's explicit ref where given, else 50% worse than these losses."""
        return [
            o.loss(o.ref) if o.ref is not None else x + 0.5 * max(abs(x), 1e-6)
            for o, x in zip(self.cfg.objectives, losses)
        ]

    def result(self) -> SearchResult:
        records = self.ordered_records()
        trials = [r for r in records if r.kind == "trial"]
        losses = [r.losses(self.cfg.objectives) for r in trials]
        ok = [i for i, x in enumerate(losses) if x is not None]
        front = [trials[ok[i]] for i in pareto.non_dominated([losses[i] for i in ok])]
        reference = self.reference
        if reference is None and ok:  # no baseline and no refs yet: the nadir, 50% worse
            reference = [max(losses[i][k] for i in ok) for k in range(len(self.cfg.objectives))]
            reference = [x + 0.5 * max(abs(x), 1e-6) for x in reference]
        hv = pareto.hypervolume([losses[i] for i in ok], reference) if reference and ok else 0.0
        return SearchResult(records, front, reference, hv, self.dir)


class _Inline:
    """One worker: run the trial right here. Torch's CPU thread pool is per calling thread, so training or
    timing in a helper thread next to the main one makes them contend (we measured 2-3x slower latency)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # noqa: BLE001 - surfaced by future.result(), as a pool would
            future.set_exception(err)
        return future  # KeyboardInterrupt and friends propagate at once, as they would in a plain call

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in value.items()}


class _Progress:
    """A rich progress bar over trained trials, with the last trial and the front size; or log lines."""

    def __init__(self, budget: int, done: int, mode: str = "bar") -> None:
        self.mode, self.bar = mode, None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"),
            )  # fmt: skip
            self.task = self.bar.add_task("", total=budget, completed=min(done, budget))
            self.bar.start()

    def start(self, trial: Trial) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"running #{trial.index} {trial.name}")
        elif self.mode == "log":
            log.info("trial %s: %s", trial.index, trial.name)

    def finish(self, rec: TrialRecord, result: SearchResult) -> None:
        if self.mode == "none":
            return
        shown = ", ".join(f"{k}={v:.4g}" for k, v in rec.objectives.items()) or rec.error or ""
        if self.bar is not None:
            self.bar.update(
                self.task,
                advance=1 if rec.kind == "trial" else 0,
                description=f"#{rec.trial} {rec.status} {shown[:80]} | front {len(result.front)} | HV {result.hypervolume:.4g}",
            )
        log.info(
            "trial %s %s [%s] %s (%.0f s) | front %d, hypervolume %.4g",
            rec.trial, rec.status, rec.name, shown, rec.duration_s, len(result.front), result.hypervolume,
        )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def write_reports(result: SearchResult, cfg: SearchConfig) -> None:
    """pareto.csv (the front), hypervolume.csv (after each trial), pareto.png (the first two objectives)."""
    objectives = cfg.objectives
    trials = [r for r in result.records if r.kind == "trial"]
    rows = [_row(r, objectives) for r in result.front]
    pareto.write_csv(result.sweep_dir / "pareto.csv", rows or [{"trial": "", "name": ""}])
    all_rows = [_row(r, objectives) for r in result.records]
    pareto.write_csv(result.sweep_dir / "trials.csv", all_rows or [{"trial": "", "name": ""}])
    if result.reference is not None:
        curve = pareto.hypervolume_curve([r.losses(objectives) for r in trials], result.reference)
        pareto.write_csv(
            result.sweep_dir / "hypervolume.csv",
            [{"trial": r.trial, "status": r.status, "hypervolume": hv} for r, hv in zip(trials, curve)]
            or [{"trial": "", "status": "", "hypervolume": ""}],
        )
    if len(objectives) >= 2:
        y, x = objectives[0], objectives[1]  # e.g. accuracy (up) against latency (right)
        ok = [r for r in trials if r.status == "ok" and r.feasible]
        points = [(r.objectives[x.name], r.objectives[y.name]) for r in ok]
        front_ids = {id(r) for r in result.front}
        front = [i for i, r in enumerate(ok) if id(r) in front_ids]
        infeasible = [
            (r.metrics[x.name], r.metrics[y.name])
            for r in trials
            if not (r.status == "ok" and r.feasible) and x.name in r.metrics and y.name in r.metrics
        ]
        base = next((r for r in result.records if r.kind == "baseline" and r.status == "ok"), None)
        pareto.plot_front(
            result.sweep_dir / "pareto.png",
            points,
            front,
            (f"{x.name} ({x.direction})", f"{y.name} ({y.direction})"),
            baseline=(base.objectives[x.name], base.objectives[y.name]) if base else None,
            failed=infeasible,
            title=f"{len(trials)} trials, front {len(result.front)}, hypervolume {result.hypervolume:.4g}",
        )


def _row(r: TrialRecord, objectives: list[ObjectiveConfig]) -> dict:
    row = {"trial": r.trial, "name": r.name, "status": r.status, "feasible": r.feasible}
    row.update({o.name: r.objectives.get(o.name, r.metrics.get(o.name)) for o in objectives})
    for k in ("params", "flops_per_seq@128", "latency/p50_ms", "val/mlm_acc", "wall_time_s"):
        if k not in row and k in r.metrics:
            row[k] = r.metrics[k]
    row["duration_s"] = r.duration_s
    row["overrides"] = " ".join(r.overrides)
    if r.error:
        row["error"] = r.error
    return row


def log_to_wandb(result: SearchResult, cfg: SearchConfig, logger_cfg: Any) -> None:
    """With logger=wandb: one W&B run for the search (objectives and hypervolume per trial, the front plot)."""
    if not logger_cfg or "WandbLogger" not in str(logger_cfg.get("_target_", "")):
        return
    import csv
    import os

    import wandb

    from recipes.common import wandb_has_credentials

    mode = "offline" if os.environ.get("WANDB_MODE") == "offline" or not wandb_has_credentials() else "online"
    hv = {}
    hv_path = result.sweep_dir / "hypervolume.csv"
    if hv_path.exists():
        hv = {
            row["trial"]: float(row["hypervolume"])
            for row in csv.DictReader(hv_path.open())
            if row["hypervolume"]
        }
    run = wandb.init(
        project=logger_cfg.get("project") or "distill-recipes",
        name=f"search-{result.sweep_dir.name}",
        dir=str(result.sweep_dir),
        mode=mode,
        job_type="search",
        config={
            "optimizer": cfg.optimizer,
            "budget": cfg.budget,
            "objectives": [o.name for o in cfg.objectives],
        },
    )
    for n, rec in enumerate(r for r in result.records if r.kind == "trial"):
        run.log(
            {
                "trial": n,
                "hypervolume": hv.get(str(rec.trial), 0.0),
                **{f"objective/{k}": v for k, v in rec.objectives.items()},
            }
        )
    if (result.sweep_dir / "pareto.png").exists():
        run.log({"pareto": wandb.Image(str(result.sweep_dir / "pareto.png"))})
    run.summary["hypervolume"] = result.hypervolume
    run.summary["front_size"] = len(result.front)
    run.finish()
