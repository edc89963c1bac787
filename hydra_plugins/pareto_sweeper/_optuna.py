"""Optuna's samplers as a search engine (``optimizer=gp`` or ``tpe``), behind _engines.Engine.

``gp`` is Optuna's GPSampler: a Gaussian process per objective (Matérn 5/2 with automatic relevance determination;
a categorical parameter enters the kernel as "equal or not", so unordered choices are not forced onto a line),
fitted by marginal likelihood with the observation noise *learned* (``deterministic_objective=False``), and the
next point chosen by log expected hypervolume improvement (logEHVI; qLogEHVI over the trials still in flight,
so ``num_workers`` > 1 gets distinct proposals). ``tpe`` is the multivariate tree-structured Parzen estimator
with a constant liar for trials in flight.

How the loop's contracts map onto an Optuna study (in memory: the ledger is the only record):

- a proposal is a RUNNING trial until told; in-flight trials are what GPSampler's qLogEHVI and TPE's constant liar
  condition on, so a batch of ``num_workers`` proposals does not repeat one in flight;
- a failed, NaN, infeasible or unmeasured trial is told FAIL: the models leave it out (a NaN never reaches the GP)
  and it is never proposed again (below). Infeasible proposals are not told a penalty value as nevergrad is: a
  made-up value would distort the GP's fit of the real ones;
- duplicates: a proposal of a point the study already holds (finished, failed or in flight) is marked FAIL and the
  sampler asked again with another seed (3 times), then a random point not yet seen is drawn (64 tries) before
  the duplicate is handed to the loop (which never trains it twice);
- resume: the ledger's trials are re-added in order (``replay``: no sampling), in-flight ones as RUNNING;
- determinism: each proposal comes from a fresh sampler seeded by (seed, trials so far, attempt), so a resumed
  search proposes what the uninterrupted one would have, given the same history (no state lives in a sampler:
  GPSampler's warm start of the kernel fit from the previous fit is given up for this).

The noise floor cannot be passed: GPSampler has no fixed-noise option (its own source lists "constant noise
insertion" as missing), so it learns each objective's noise variance with a Gamma prior instead.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hydra_plugins.pareto_sweeper._space import Parameter, SearchSpace, architecture_key, plain

ENUMERATE = 4096  # a discrete space this small has its acquisition maximised exactly, over every unseen point
SAMPLER_TRIES = 3  # proposals of known points before falling back to random ones
RANDOM_TRIES = 64
STARTUP_TRIALS = 10  # random proposals before the model takes over (Optuna's default), at most half the budget


def startup_trials(budget: int | None) -> int:
    """Random start-up trials for a search of ``budget`` trials: Optuna's 10, but at most half of a small budget
    (the CPU demo trains 6: the GP proposes from the 4th), and at least 3 (a GP needs a few points)."""
    return STARTUP_TRIALS if budget is None else max(3, min(STARTUP_TRIALS, budget // 2))


@dataclass
class OptunaCandidate:
    """A proposal: the study's trial number and the value (``{entry name: value}``, as the ledger keeps it)."""

    number: int
    value: dict[str, Any]


class OptunaEngine:
    """An in-memory Optuna study over the space (see the module docstring)."""

    penalise_failures = False

    def __init__(self, name: str, space: SearchSpace, seed: int, objectives: int, startup: int = STARTUP_TRIALS) -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)  # no line per told trial
        self.name = name
        self.seed = seed
        self.startup = startup
        self.params = space.parameters()
        self.dists = {k: _distribution(p) for k, p in self.params.items() if not _constant(p)}
        self.study = optuna.create_study(directions=["minimize"] * objectives)
        self.known: set[str] = set()  # keys of every point the study holds (the discarded duplicates aside)
        self.known_params: set[tuple] = set()  # the same points as Optuna's params (by name), for the GP's grid
        self.trials = 0  # trials created in the study (discarded duplicates included): the next trial's number

    # ---- the Engine interface --------------------------------------------------------------------
    def ask(self) -> OptunaCandidate:
        from optuna.trial import TrialState

        history = len(self.known)
        for attempt in range(SAMPLER_TRIES + RANDOM_TRIES):
            self.study.sampler = self._sampler(history, attempt, random=attempt >= SAMPLER_TRIES)
            trial = self.study.ask(self.dists)
            self.trials += 1
            value = self._decode(trial.params)
            key = architecture_key(value)
            if key not in self.known:
                self._remember(key, trial.params)
                return OptunaCandidate(trial.number, value)
            if attempt < SAMPLER_TRIES + RANDOM_TRIES - 1:
                self.study.tell(trial.number, state=TrialState.FAIL)  # a duplicate: left out of every model
        return OptunaCandidate(trial.number, value)  # the space looks exhausted: the loop handles the duplicate

    def replay(self, value: dict[str, Any]) -> OptunaCandidate:
        import optuna
        from optuna.trial import TrialState

        params = {k: self._encode(k, value[k]) for k in self.dists}
        frozen = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=self.dists)
        self.study.add_trial(frozen)
        self.trials += 1
        self._remember(architecture_key(self._decode(params)), params)
        return OptunaCandidate(self.trials - 1, self._decode(params))

    def tell(self, candidate: OptunaCandidate, losses: list[float] | None) -> None:
        from optuna.trial import TrialState

        if losses is None or not all(math.isfinite(x) for x in losses):
            self.study.tell(candidate.number, state=TrialState.FAIL)
        else:
            self.study.tell(candidate.number, [float(x) for x in losses])

    def tell_known(self, candidate: OptunaCandidate, losses: list[float] | None) -> None:
        # Only a point the study did not hold reaches here (e.g. the baseline's student): its result is news to
        # the model; a duplicate handed over after the random tries is told again, which the GP takes as a repeat.
        self.tell(candidate, losses)

    def discard(self, candidate: OptunaCandidate) -> None:
        from optuna.trial import TrialState

        self.study.tell(candidate.number, state=TrialState.FAIL)

    def set_reference(self, reference: list[float]) -> None:
        return None  # GPSampler's hypervolume improvement takes its reference point from the observed values

    # ---- helpers ---------------------------------------------------------------------------------
    def _remember(self, key: str, params: dict[str, Any]) -> None:
        self.known.add(key)
        self.known_params.add(_params_key(params))

    def _sampler(self, history: int, attempt: int, random: bool):
        import optuna

        seed = int(np.random.SeedSequence([self.seed, history, attempt]).generate_state(1)[0])
        if random:
            return optuna.samplers.RandomSampler(seed=seed)
        if self.name == "gp":
            sampler = _gp_sampler_class()(
                seed=seed, n_startup_trials=self.startup, deterministic_objective=False,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed), warn_independent_sampling=False,
            )  # fmt: skip
            sampler.exclude = self.known_params
            return sampler
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=self.startup)

    def _decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's params (option indices, numbers) -> the space's value, every entry in the space's order."""
        out = {}
        for key, p in self.params.items():
            if _constant(p):
                out[key] = plain(p.options[0])
            elif p.options is not None:
                out[key] = plain(p.options[int(params[key])])
            else:
                out[key] = plain(params[key])
        return out

    def _encode(self, key: str, value: Any) -> Any:
        p = self.params[key]
        if p.options is None:
            return value
        plains = [plain(o) for o in p.options]
        if value not in plains:
            raise ValueError(f"{key}={value!r} is not one of the space's options {plains}")
        return plains.index(value)


def _params_key(params: dict[str, Any]) -> tuple:
    """Optuna params (option indices, numbers) as a hashable key, by parameter name."""
    return tuple((k, float(params[k])) for k in sorted(params))


def _gp_sampler_class():
    """GPSampler, whose acquisition on a small discrete space is maximised over every point not yet seen (an exact
    argmax, and never a known point) instead of Optuna's sampled local search. Optuna documents ``_optimize_acqf`` as
    the method to override for this (without a compatibility promise: tests/test_search_engines.py pins it)."""
    import optuna

    class EnumeratingGPSampler(optuna.samplers.GPSampler):
        exclude: set[tuple] = set()

        def _optimize_acqf(self, acqf, best_params):
            space = acqf.search_space
            choices = space.get_choices_of_discrete_params()  # per discrete dimension, its normalised values
            size = math.prod(len(c) for c in choices)
            if len(space.continuous_indices) or size > ENUMERATE:
                return super()._optimize_acqf(acqf, best_params)
            grid = np.zeros((size, space.dim))
            grid[:, space.discrete_indices] = np.array(list(itertools.product(*choices)), dtype=float)
            # Each grid row's params, built per dimension (unnormalising 576 rows one by one costs ~0.1 s)
            names = list(space.get_unnormalized_param(grid[0]))
            per_dim = []
            for d, values in zip(space.discrete_indices, choices):
                row = grid[0].copy()
                per_dim.append([(names[d], float(space.get_unnormalized_param(_with(row, d, v))[names[d]]))
                                for v in values])  # fmt: skip
            keys = (tuple(sorted(combo)) for combo in itertools.product(*per_dim))
            unseen = np.array([key not in self.exclude for key in keys])
            if not unseen.any():
                return super()._optimize_acqf(acqf, best_params)
            grid = grid[unseen]
            return grid[int(np.argmax(acqf.eval_acqf_no_grad(grid)))]

    return EnumeratingGPSampler


def _with(row: np.ndarray, d: int, v: float) -> np.ndarray:
    row[d] = v
    return row


def _constant(p: Parameter) -> bool:
    return p.options is not None and len(p.options) == 1


def _distribution(p: Parameter):
    """Ordered numeric options (> 2) as an integer index, so the GP sees their order; other options as unordered
    categories (indices, so any JSON value can be an option); intervals as Optuna's float / int ranges."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.options is not None:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.options)
        ordered = len(p.options) > 2 and numbers and list(p.options) == sorted(p.options)
        n = len(p.options)
        return IntDistribution(0, n - 1) if ordered else CategoricalDistribution(tuple(range(n)))
    if p.integer:
        return IntDistribution(math.ceil(p.low), math.floor(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.log)
