"""The optimisers behind the search loop, behind one small ask/tell interface (``Engine``):

- ``NevergradEngine``: any nevergrad optimiser (``bo`` = its ParametrizedBO, ``random``, ``de``, ...);
- ``OptunaEngine`` (_optuna.py): Optuna's samplers, among them a real multi-objective Bayesian optimisation for
  mixed categorical / integer / float spaces (``gp``: GPSampler, log expected hypervolume improvement).

The loop (_search.py) owns the ledger, the budget, duplicates and constraints; an engine only proposes and learns.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

from hydra_plugins.pareto_sweeper._space import SearchSpace, parametrization

# Short names for the optimisers the paper compares (§4.3); any other nevergrad registry name also works.
NEVERGRAD = {
    "bo": "BO",  # nevergrad's Bayesian optimisation: a GP on a continuous relaxation of the choices
    "random": "RandomSearch",
    "de": "DE",  # differential evolution (the paper compares a firefly algorithm: also population-based)
    "twopointsde": "TwoPointsDE",
    "cma": "CMA",
    "pso": "PSO",
    "ngopt": "NGOpt",  # nevergrad's own choice for the space
}
# Optuna's samplers (_optuna.py). gp: multi-objective BO with a categorical-aware kernel; tpe: multivariate TPE
# with a constant liar for trials in flight. (Not NSGA-II: its generations live in trial attributes that a resume
# from the ledger would not restore.)
OPTUNA = ("gp", "tpe")


class Engine(Protocol):
    """What the loop needs of an optimiser. A candidate is any object with ``.value`` ({entry name: value})."""

    # True: failed / infeasible proposals are told a penalty beyond the reference point (nevergrad needs a number
    # for every asked point); False: they are told as failures, which the engine's model leaves out.
    penalise_failures: bool

    def ask(self) -> Any:
        """A new proposal."""
        ...

    def replay(self, value: dict[str, Any]) -> Any:
        """A candidate for a value proposed before (a ledger line, a trial in flight at a crash), to be told."""
        ...

    def tell(self, candidate: Any, losses: list[float] | None) -> None:
        """The candidate's objectives as losses (smaller is better); None: it failed / yields no value."""
        ...

    def tell_known(self, candidate: Any, losses: list[float] | None) -> None:
        """A proposal of something already evaluated: the loop did not run it again (``losses`` as in tell)."""
        ...

    def discard(self, candidate: Any) -> None:
        """An asked candidate the loop will not run now (it is in flight already, or its numbers are untrusted)."""
        ...

    def set_reference(self, reference: list[float]) -> None:
        """The multi-objective reference point (in loss space), once it is known."""
        ...


def make_engine(
    name: str, space: SearchSpace, seed: int, budget: int, num_workers: int, objectives: int, trials: int | None = None
) -> Engine:
    """The engine for ``name`` (a short name of NEVERGRAD or OPTUNA, or any nevergrad registry name).

    Args:
        budget: the proposals it may be asked for (nevergrad's budget).
        trials: the trials the search will train (Optuna's random start-up is a share of them); None: many.
    """
    if name.lower() in OPTUNA:
        from hydra_plugins.pareto_sweeper._optuna import OptunaEngine, startup_trials

        return OptunaEngine(name.lower(), space, seed, objectives, startup=startup_trials(trials))
    return NevergradEngine(NEVERGRAD.get(name.lower(), name), space, seed, budget, num_workers, objectives)


class NevergradEngine:
    """A nevergrad optimiser over ``parametrization(space, seed)``."""

    penalise_failures = True

    def __init__(self, name: str, space: SearchSpace, seed: int, budget: int, num_workers: int, objectives: int):
        import nevergrad as ng

        self.multi = objectives > 1
        param = parametrization(space, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BO warns that discrete spaces suit it less: known, chosen
            if name == "BO":
                # A little observation noise in the GP: categorical factors make the objective step-like.
                self.opt = ng.optimizers.ParametrizedBO(gp_parameters={"alpha": 1e-3})(
                    parametrization=param, budget=budget, num_workers=num_workers
                )
            else:
                self.opt = ng.optimizers.registry[name](parametrization=param, budget=budget, num_workers=num_workers)

    def ask(self) -> Any:
        return self.opt.ask()

    def replay(self, value: dict[str, Any]) -> Any:
        self.opt.suggest(value)  # suggest it, then ask it back
        return self.opt.ask()

    def tell(self, candidate: Any, losses: list[float] | None) -> None:
        if losses is None:
            return  # nothing sensible to tell yet (no reference for a penalty): the proposal stays un-told
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.opt.tell(candidate, losses if self.multi else losses[0])

    def tell_known(self, candidate: Any, losses: list[float] | None) -> None:
        self.tell(candidate, losses)

    def discard(self, candidate: Any) -> None:
        return None  # nevergrad keeps no state for an asked, un-told candidate that matters here

    def set_reference(self, reference: list[float]) -> None:
        import nevergrad as ng

        if self.multi:
            self.opt.tell(ng.p.MultiobjectiveReference(), list(reference))
