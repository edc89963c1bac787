"""What to search and how: objectives, constraints and the search settings (generic: no default space,
objective or report column; a project brings its own through config)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from hydra_plugins.pareto_sweeper._engines import NEVERGRAD, OPTUNA
from hydra_plugins.pareto_sweeper._space import SearchSpace, build_space, space_identity

# The optimisers' short names (_engines.py): nevergrad's (any other nevergrad registry name also works) and Optuna's.
OPTIMIZERS = {**NEVERGRAD, **{name: name for name in OPTUNA}}
DIRECTIONS = ("max", "min")


@dataclass
class ObjectiveConfig:
    """A metric the trial returns, whether more (max) or less (min) is better, and its noise floor.

    The noise floor is the smallest difference on this objective that is more than measurement noise
    (in the objective's units; _noise.py): the front's selection ignores differences below it.

    Raises:
        ValueError: a direction other than max / min, a negative or non-finite fixed ``noise``, or
            ``noise_relative`` without a noise metric.
    """

    # The setting's key in error messages; a project's schema nesting it elsewhere overrides it. Not a field.
    key: ClassVar[str] = "objectives"

    name: str
    direction: str = "max"
    # The worst value still of interest: the hypervolume's reference point, and where nevergrad's
    # multi-objective scalarisation is anchored. null: 50% worse than the baseline (or the first trial).
    ref: float | None = None
    # The noise floor: a number (fixed, in the objective's units), the name of a metric in which each trial
    # reports its own spread (e.g. latency/p50_spread), or null: measured by re-running the baseline with
    # other seeds (SearchConfig.noise_seeds). Not part of the search's identity: a resume may change it.
    noise: float | str | None = None
    # The noise metric is a fraction of the objective's value (latency/p50_spread = (max - min) / median of the
    # round medians): the trial's floor is metric x |value|, in the objective's units.
    noise_relative: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"{self.key}: objective {self.name!r}: direction must be max or min, got {self.direction!r}"
            )
        if isinstance(self.noise, int | float) and not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"{self.key}: objective {self.name!r}: noise must be a floor >= 0, a metric name or "
                             f"null, got {self.noise!r}")  # fmt: skip
        if self.noise_relative and not isinstance(self.noise, str):
            raise ValueError(f"{self.key}: objective {self.name!r}: noise_relative needs noise to name a metric "
                             f"(e.g. latency/p50_spread), got noise={self.noise!r}")  # fmt: skip

    def loss(self, value: float) -> float:
        """The value as a loss (smaller is better): negated for a max objective."""
        return -value if self.direction == "max" else value


@dataclass
class ConstraintConfig:
    """A hard limit on a metric. Metrics the pre-trial hook computes (e.g. a model's size or measured
    latency) are checked before training: violating proposals are never trained.

    Raises:
        ValueError: neither max nor min given.
    """

    key: ClassVar[str] = "constraints"  # as ObjectiveConfig.key

    name: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise ValueError(f"{self.key}: constraint {self.name!r}: give max and/or min")

    def violation(self, value: float) -> float:
        """0 when satisfied, else how far outside, relative to the limit."""
        over = 0.0
        if self.max is not None and value > self.max:
            over = (value - self.max) / max(abs(self.max), 1e-12)
        if self.min is not None and value < self.min:
            over = max(over, (self.min - value) / max(abs(self.min), 1e-12))
        return over


def _default_space() -> dict[str, Any]:
    return {"_target_": "hydra_plugins.pareto_sweeper.ParamSpace", "params": []}


@dataclass
class SearchConfig:
    """How to search: the Hydra sweeper's config (``hydra.sweeper.*``) and any in-process caller's.

    ``space`` is a ``SearchSpace`` object or its config (``{_target_: <class>, ...}``; default: the
    generic ``ParamSpace``). ``report_columns``: metrics copied into pareto.csv / trials.csv beside the
    objectives when a trial returns them.

    Raises:
        ValueError: an unknown optimizer, budget or num_workers < 1, no objective, an objective twice,
            noise_seeds < 0, noise_scale <= 0, or a bad space.
    """

    # Where these settings sit, for error messages: the Hydra sweeper's node; a project's schema of its own
    # (e.g. an in-process ``search`` group) overrides it. A ClassVar: not a setting.
    key: ClassVar[str] = "hydra.sweeper"

    optimizer: str = "bo"  # gp | tpe (Optuna) | bo | random | de | twopointsde | cma | pso | ngopt | any nevergrad name
    budget: int = 20  # trained trials (finished or failed); the baseline and infeasible proposals are extra
    num_workers: int = 1  # trials in flight at once (needs a parallel launcher, e.g. submitit)
    seed: int = 0
    space: Any = field(default_factory=_default_space)
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    constraints: list[ConstraintConfig] = field(default_factory=list)
    max_proposals: int | None = None  # stop asking after this many (null: 20 x budget)
    report_columns: list[str] = field(default_factory=list)
    # Metrics a trial sets (non-zero) when its own numbers are not to be trusted (e.g. latency/contended): the
    # trial is recorded "unmeasured", never told to the optimiser nor on the front, and re-run on resume.
    invalid_if: list[str] = field(default_factory=list)
    # On resume, run the ledger's failed trials again (under their own index) instead of counting them as spent.
    retry_failed: bool = False
    # Noise floors (_noise.py): an objective with noise=null is measured by re-running the baseline (or, without
    # one, the first finished trial) noise_seeds more times, each with <seed_key>=<its seed + k>; its floor is
    # the spread (max - min) over the runs x noise_scale. 0: no repeats (those floors are 0: strict dominance).
    # Repeats are not trials: they do not count against the budget and are never told to the optimiser.
    noise_seeds: int = 1
    noise_scale: float = 1.0  # multiplies every measured floor (seed repeats and noise metrics), not fixed ones
    seed_key: str = "seed"  # the trial config's seed (a Hydra override key)

    def __post_init__(self) -> None:
        # Built from Hydra's DictConfig, the nested entries may still be plain dicts.
        try:
            self.space: SearchSpace = build_space(self.space)
        except ValueError as err:
            message = str(err)
            raise ValueError(f"{self.key}.{message}" if message.startswith("space") else f"{self.key}.space: {message}") from None
        self.objectives = [_build(ObjectiveConfig, o, self.key) for o in self.objectives]
        self.constraints = [_build(ConstraintConfig, c, self.key) for c in self.constraints]
        self.report_columns = list(self.report_columns)
        self.invalid_if = list(self.invalid_if)
        key = self.key
        if self.optimizer.lower() not in OPTIMIZERS:
            import nevergrad as ng

            if self.optimizer not in ng.optimizers.registry:
                raise ValueError(
                    f"{key}.optimizer={self.optimizer!r} is unknown: use one of {sorted(OPTIMIZERS)} "
                    "or a nevergrad optimizer name (nevergrad.optimizers.registry)"
                )
        if self.budget < 1:
            raise ValueError(f"{key}.budget must be >= 1 trial, got {self.budget}")
        if self.num_workers < 1:
            raise ValueError(f"{key}.num_workers must be >= 1, got {self.num_workers}")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise ValueError(f"{key}.max_proposals must be >= 1 or null (20 x budget), got {self.max_proposals}")
        if self.noise_seeds < 0:
            raise ValueError(f"{key}.noise_seeds must be >= 0 (0: no seed repeats), got {self.noise_seeds}")
        if not (math.isfinite(self.noise_scale) and self.noise_scale > 0):
            raise ValueError(f"{key}.noise_scale must be > 0, got {self.noise_scale}")
        if not 0 <= self.seed < 2**32:  # numpy's RandomState, which nevergrad seeds with it, refuses others
            raise ValueError(f"{key}.seed must be in [0, 2**32), got {self.seed}")
        if not self.objectives:
            raise ValueError(f"{key}.objectives: give at least one {{name, direction}}")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"{key}.objectives name a metric twice: {names}")

    @property
    def proposal_limit(self) -> int:
        """How many proposals to ask for at most."""
        return self.max_proposals or 20 * self.budget

    @property
    def repeats(self) -> int:
        """Seed repeats to run: noise_seeds when an objective's floor is measured by them, else 0."""
        return self.noise_seeds if any(o.noise is None for o in self.objectives) else 0

    def identity(self) -> dict:
        """What a resumed search must share with the sweep dir it resumes (the budget may grow)."""
        return {
            "optimizer": self.optimizer,
            "seed": self.seed,
            "space": space_identity(self.space),
            # Noise settings only re-judge the same ledger: a resume may change them.
            "objectives": [{k: v for k, v in asdict(o).items() if k not in ("noise", "noise_relative")}
                           for o in self.objectives],  # fmt: skip
            "constraints": [asdict(c) for c in self.constraints],
        }


def _build(cls: type, entry: Any, key: str) -> Any:
    """An objective / constraint from its config dict (as is when already built); errors name ``key``."""
    if isinstance(entry, cls):
        return entry
    try:
        return cls(**entry)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}.{cls.key}: {entry}: {err}" if isinstance(err, TypeError) else f"{key}.{err}") from None
