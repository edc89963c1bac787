"""The search loop (AutoDistill Fig. 1): ask the optimiser (_engines.py: nevergrad or Optuna) for a candidate
-> check hard constraints before training -> run it (a Hydra job, or an in-process call) -> tell the optimiser
every objective -> repeat.

``ParetoSearch`` is shared by the Hydra sweeper (``hydra/sweeper=pareto``, trials are launcher jobs)
and by in-process callers (e.g. a project's pipeline). Everything it learns goes to the sweep dir as it
happens (_ledger.py: ledger.jsonl, pending.json, search.json; _reports.py: pareto.csv, pareto.png,
hypervolume.csv, refreshed after every trial). After a crash, re-running with the same sweep dir re-tells
the ledger to the optimiser, re-launches the pending trials with their *same* index and settings (so a
trial resumes from its own checkpoint), and carries on: no trial is lost or run twice. Trials flagged by
``cfg.invalid_if`` are ``unmeasured``: never told, never on the front, re-launched on resume. Seed repeats of the
baseline (_repeats.py) measure the noise floors (_noise.py); they run before further trials, outside the budget,
and are never told.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_plugins.pareto_sweeper._checks import (
    raise_if_all_failed,
    retry_failed_trials,
    warn_if_latency_floor_by_seeds,
    warn_if_stopped_early,
)
from hydra_plugins.pareto_sweeper._config import SearchConfig
from hydra_plugins.pareto_sweeper._engines import Engine, make_engine
from hydra_plugins.pareto_sweeper._front import search_result
from hydra_plugins.pareto_sweeper._ledger import (
    Ledger,
    SearchResult,
    Trial,
    TrialRecord,
    clean_metrics,
    invalid_flags,
    make_record,
    now,
    violations,
)
from hydra_plugins.pareto_sweeper._repeats import plan_repeats
from hydra_plugins.pareto_sweeper._reports import Progress, write_reports
from hydra_plugins.pareto_sweeper._space import architecture_key, plain, to_overrides

log = logging.getLogger(__name__)


@dataclass
class _Loop:
    """The state of one run of the loop: the optimiser, what is in flight, and the counters."""

    opt: Any
    pool: Any  # a ThreadPoolExecutor, or _Inline for one worker
    progress: Progress
    seen: dict[str, TrialRecord]  # architecture key -> its record: never run twice
    queued: list[Trial] = field(default_factory=list)  # the baseline and trials in flight at the last stop
    in_flight: dict[int | str, Trial] = field(default_factory=dict)
    candidates: dict[int | str, Any] = field(default_factory=dict)  # trial index -> the engine's candidate
    futures: dict[Future, Trial] = field(default_factory=dict)
    next_index: int = 0
    proposals: int = 0
    re_proposals: int = 0  # proposals of candidates already evaluated (a converging optimiser makes many)


class ParetoSearch:
    """Multi-objective ask/tell over a sweep dir; see the module docstring.

    Args:
        cfg: what to search and how.
        sweep_dir: where the ledger and reports live; re-using it resumes.
        launch: runs one trial and returns its metrics (raises on failure). Called from worker threads
            when ``cfg.num_workers > 1``.
        pretrial: ``(trial, names) -> {name: value}`` for the constraint metrics it can compute without
            training; None: every constraint is checked after training. A ValueError from it marks the
            proposal infeasible; any other exception stops the search.
        baseline: a reference trial run first (not told to the optimiser): marked on the plot, and the
            default reference point.
        on_update: called with the result after every finished trial.
        base_seed: the seed trials run with (their config's ``cfg.seed_key``); seed repeat k runs with it + k.
        reports: False writes only the ledger until the end (benchmarks that run thousands of instant trials).
        progress: bar (a rich progress bar; not while the trial itself draws one in this terminal) | log | none.
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
        base_seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.dir = Path(sweep_dir)
        self.ledger = Ledger(self.dir, cfg)
        self.launch = launch
        self.pretrial = pretrial
        self.baseline = baseline
        self.on_update = on_update
        self.reports = reports
        self.progress = progress
        self.base_seed = base_seed
        self.records: dict[int | str, TrialRecord] = {}
        self.reference: list[float] | None = self._explicit_reference()
        self._told_reference = False

    def run(self) -> SearchResult:
        """Search until ``cfg.budget`` trials are trained (or proposals run out); returns the result.

        Raises:
            ValueError: the sweep dir holds a different search.
            RuntimeError: every trial failed (the most common error; the ledger and reports are written first).
            BaseException: whatever stopped the search (Ctrl-C, a kill, a failing pre-trial hook), after
                every finished result was saved and unfinished trials were left pending for the next run.
        """
        warn_if_latency_floor_by_seeds(self.cfg)
        loop = self._start()
        try:
            for t in loop.queued:
                self._submit(loop, t)
            while True:
                self._fill(loop)
                if not loop.futures:
                    break
                done, _ = wait(list(loop.futures), return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finish(loop, fut)
            warn_if_stopped_early(loop.proposals, self.cfg, self._trained(), loop.re_proposals, self.records.values())
        except BaseException:
            # Ctrl-C, a kill signal turned exception, a bug: keep every finished result, leave the rest pending
            # (pending.json) for the next run, and do not wait for trials still running.
            for fut in [f for f in loop.futures if f.done() and f.exception() is None]:
                self._finish(loop, fut)
            self._save(loop.in_flight)
            loop.pool.shutdown(wait=False, cancel_futures=True)
            loop.progress.close()
            raise
        loop.pool.shutdown(wait=True)
        loop.progress.close()
        result = self.result()
        write_reports(result, self.cfg)
        raise_if_all_failed(result.records, self.cfg.key, self.dir)
        return result

    # ---- the loop's steps --------------------------------------------------------------------
    def _start(self) -> _Loop:
        """Load the sweep dir, replay its ledger to a fresh optimiser, queue what must run first."""
        saved = self.ledger.load()
        if self.reference is None and saved.reference is not None:
            self.reference = saved.reference
        saved.records, retry = retry_failed_trials(saved.records, self.cfg.retry_failed, self.cfg.key)
        retry = [Trial(r.trial, r.kind, r.name, r.value, r.assigned, r.overrides)  # never told: run them again
                 for r in retry + [r for r in saved.records if r.status == "unmeasured"]]  # fmt: skip
        saved.records, saved.pending = [r for r in saved.records if r.status != "unmeasured"], saved.pending + retry
        for rec in saved.records:
            self.records[rec.trial] = rec
        opt = self._make_optimizer()
        # Replay: the optimiser sees every finished trial again, in order; nothing is re-run.
        replayed = sorted((r for r in saved.records if r.kind == "trial"), key=lambda r: int(r.trial))
        for rec in replayed:
            self._tell(opt, opt.replay(rec.value), rec)
        if saved.records:
            log.info("resuming %s: %d trials in the ledger, %d were in flight",
                     self.dir, len(saved.records), len(saved.pending))  # fmt: skip
        workers = self.cfg.num_workers
        loop = _Loop(
            opt=opt,
            pool=ThreadPoolExecutor(max_workers=workers) if workers > 1 else _Inline(),
            progress=Progress(self.cfg.budget, self._trained(), self.progress),
            seen={architecture_key(r.assigned): r for r in replayed},
            queued=[t for t in saved.pending if t.index not in self.records],
            proposals=len(replayed),
        )
        for t in loop.queued:
            if t.kind == "trial":
                loop.candidates[t.index] = opt.replay(t.value)
        loop.next_index = 1 + max(
            [int(r.trial) for r in replayed] + [t.index for t in loop.queued if t.kind == "trial"] + [-1]
        )
        # The baseline first (once), then trials that were in flight when the last run stopped.
        if self.baseline is not None and "baseline" not in self.records and "baseline" not in {t.index for t in loop.queued}:
            loop.queued.insert(0, self.baseline)
        return loop

    def _fill(self, loop: _Loop) -> None:
        """Seed repeats first (outside the budget); then ask for proposals until every worker is busy, the budget
        is reached, or proposals run out."""
        repeats = plan_repeats(self.cfg, self.records.values(), loop.in_flight.values(), self.baseline is not None,
                               self.base_seed)  # fmt: skip
        while repeats and len(loop.futures) < self.cfg.num_workers:
            self._submit(loop, repeats.pop(0))
        while (
            len(loop.futures) < self.cfg.num_workers
            and self._trained() + sum(t.kind == "trial" for t in loop.in_flight.values()) < self.cfg.budget
            and loop.proposals < self.cfg.proposal_limit
        ):
            if any(t.kind == "baseline" for t in loop.in_flight.values()) and self.reference is None:
                break  # the baseline sets the default reference point: wait for it
            candidate = loop.opt.ask()
            trial = self._trial(loop.next_index, candidate.value)
            if trial.key in {t.key for t in loop.in_flight.values()}:
                loop.opt.discard(candidate)
                break  # proposed again while it runs: wait for its result rather than burn proposals
            loop.proposals += 1
            if trial.key in loop.seen:
                self._tell(loop.opt, candidate, loop.seen[trial.key], known=True)  # evaluated already: never run twice
                loop.re_proposals += 1
                continue
            rejected = self._precheck(trial)
            loop.next_index += 1
            if rejected is not None:
                log.info("trial %d (%s): %s", trial.index, trial.name, rejected.error)
                self.records[trial.index] = rejected
                loop.seen[trial.key] = rejected
                self._save(loop.in_flight)
                self._tell(loop.opt, candidate, rejected)
                continue
            loop.candidates[trial.index] = candidate
            self._submit(loop, trial)

    def _submit(self, loop: _Loop, trial: Trial) -> None:
        loop.in_flight[trial.index] = trial
        self._save(loop.in_flight)
        loop.progress.start(trial)
        loop.futures[loop.pool.submit(self._run_one, trial)] = trial

    def _finish(self, loop: _Loop, fut: Future) -> None:
        """Record a finished trial (on disk first), tell the optimiser, refresh the reports."""
        trial = loop.futures.pop(fut)
        rec = fut.result()
        self.records[trial.index] = rec
        loop.in_flight.pop(trial.index, None)
        self._save(loop.in_flight)  # first: whatever happens next, this result is on disk
        if trial.kind == "baseline":
            self._set_reference_from(rec)
            if trial.assigned:  # a proposal of the baseline's own candidate reuses its result
                loop.seen[architecture_key(trial.assigned)] = rec
        elif trial.kind == "trial":
            loop.seen[trial.key] = rec
            self._tell(loop.opt, loop.candidates.pop(trial.index), rec)
        result = self.result()
        loop.progress.finish(rec, result)
        try:
            if self.reports:
                write_reports(result, self.cfg)
            if self.on_update is not None:
                self.on_update(result)
        except Exception as err:  # noqa: BLE001 - a report is not worth the search
            log.warning("could not refresh the reports in %s: %s", self.dir, err)

    def _explicit_reference(self) -> list[float] | None:
        refs = [o.ref for o in self.cfg.objectives]
        if all(r is not None for r in refs):
            return [o.loss(r) for o, r in zip(self.cfg.objectives, refs)]
        return None

    # ---- persistence -------------------------------------------------------------------------
    def _save(self, in_flight: dict[int | str, Trial]) -> None:
        self.ledger.save(self.ordered_records(), list(in_flight.values()), self.reference)

    def ordered_records(self) -> list[TrialRecord]:
        """The baseline (if any), then seed repeats, then trials in index order."""
        base = [r for r in self.records.values() if r.kind == "baseline"]
        repeats = sorted((r for r in self.records.values() if r.kind == "repeat"),
                         key=lambda r: (str(r.value.get("repeat_of")), r.value.get("repeat", 0)))  # fmt: skip
        trials = sorted((r for r in self.records.values() if r.kind == "trial"), key=lambda r: int(r.trial))
        return base + repeats + trials

    # ---- optimiser ---------------------------------------------------------------------------
    def _make_optimizer(self) -> Engine:
        cfg = self.cfg
        return make_engine(cfg.optimizer, cfg.space, cfg.seed, cfg.proposal_limit, cfg.num_workers, len(cfg.objectives),
                           trials=cfg.budget)  # fmt: skip

    def _tell(self, opt: Engine, candidate, record: TrialRecord | None, known: bool = False) -> None:
        """Tell the engine a trial's losses; failed / infeasible ones get a penalty beyond the reference where the
        engine wants one (nevergrad), or are told as failures (Optuna). ``known``: a re-proposal, not run again."""
        tell = opt.tell_known if known else opt.tell
        if record is not None and record.status == "unmeasured":
            if not known:
                opt.discard(candidate)  # its numbers are not to be trusted: no value, not even a penalty, is told
            return
        losses = record.losses(self.cfg.objectives) if record is not None else None
        if losses is not None and self.reference is None:
            self.reference = self._reference_from(losses)  # no baseline: anchored on the first good trial
        if losses is None and opt.penalise_failures and self.reference is not None:
            losses = [r + 0.5 * max(abs(r), 1e-6) for r in self.reference]
        if self.reference is not None and not self._told_reference:
            opt.set_reference(list(self.reference))
            self._told_reference = True
        tell(candidate, losses)

    # ---- one trial ---------------------------------------------------------------------------
    def _trial(self, index: int, value: dict[str, Any]) -> Trial:
        assigned = self.cfg.space.assignments(value)
        return Trial(
            index=index,
            kind="trial",
            name=self.cfg.space.describe(assigned),
            value={k: plain(v) for k, v in value.items()},
            assigned=assigned,
            overrides=to_overrides(assigned),
        )

    def _run_one(self, trial: Trial) -> TrialRecord:
        """Launch a trial and turn whatever happens into a ledger record (never raises)."""
        started, t0 = now(), time.perf_counter()
        error, metrics = None, {}
        try:
            metrics = clean_metrics(self.launch(trial))
        except Exception as err:  # noqa: BLE001 - a failing trial is data, the search goes on
            error = f"{type(err).__name__}: {err}"
            log.warning("trial %s (%s) failed: %s", trial.index, trial.name, error)
            log.debug("%s", traceback.format_exc())
        return make_record(self.cfg, trial, metrics, error, started, time.perf_counter() - t0)

    def _precheck(self, trial: Trial) -> TrialRecord | None:
        """Constraints decidable before training: a record of the infeasible proposal, or None to train it."""
        if not self.cfg.constraints or self.pretrial is None:
            return None
        started, t0 = now(), time.perf_counter()
        try:
            known = clean_metrics(self.pretrial(trial, {c.name for c in self.cfg.constraints}))
        except ValueError as err:  # an impossible student (e.g. heads do not divide the width): not trained
            rec = make_record(self.cfg, trial, {}, f"{type(err).__name__}: {err}", started, time.perf_counter() - t0)
            rec.status, rec.feasible = "infeasible", False
            return rec
        # Anything else (no teacher config, a broken device) is not the proposal's fault: it stops the search.
        violated = violations(self.cfg, known, partial=True)
        # Flagged pre-trial metrics (e.g. latency timed on a busy machine) reject nothing: checked after training.
        if not violated or invalid_flags(self.cfg, known):
            return None
        rec = make_record(self.cfg, trial, known, None, started, time.perf_counter() - t0)
        rec.status, rec.feasible = "infeasible", False
        rec.error = f"not trained: violates {violated}"
        return rec

    def _trained(self) -> int:
        return sum(1 for r in self.records.values() if r.kind == "trial" and r.status in ("ok", "failed", "unmeasured"))

    def _set_reference_from(self, rec: TrialRecord) -> None:
        if self.reference is None and rec.status == "ok" and rec.feasible:
            self.reference = self._reference_from([o.loss(rec.objectives[o.name]) for o in self.cfg.objectives])

    def _reference_from(self, losses: list[float]) -> list[float]:
        """Each objective's explicit ref where given, else 50% worse than these losses."""
        return [o.loss(o.ref) if o.ref is not None else x + 0.5 * max(abs(x), 1e-6)
                for o, x in zip(self.cfg.objectives, losses)]  # fmt: skip

    def result(self) -> SearchResult:
        """The search so far: records, the strict and distinguishable fronts, noise floors, reference, hypervolume."""
        return search_result(self.cfg, self.ordered_records(), self.reference, self.dir)


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
