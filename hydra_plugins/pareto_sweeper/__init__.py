"""Multi-objective search: the Hydra sweeper (sweeper.py; its schema is ``hydra/sweeper=pareto_base``) and
the search loop it shares with in-process callers. Generic: the space, objectives, report columns and
pre-trial hook come in through config, so the package imports nothing of the project that uses it.

Hydra's plugin scan re-executes every module of this package whose name does not start with "_" (and
would redefine the config dataclasses under their users' feet), so the implementation lives in the
underscore modules, the scan only sees ``sweeper.py``, and the public API is re-exported here:
_space.py (the space protocol, the generic space, override formatting), _config.py (settings),
_ledger.py (records, sweep-dir files), _search.py (the loop), _checks.py (mistakes caught before trials), _pareto.py (Pareto
maths), _noise.py (noise floors), _repeats.py (the seed repeats behind them), _front.py (the result), _reports.py.
"""

from hydra_plugins.pareto_sweeper._checks import check_metric_names
from hydra_plugins.pareto_sweeper._config import ConstraintConfig, ObjectiveConfig, SearchConfig
from hydra_plugins.pareto_sweeper._ledger import SearchResult, Trial, TrialRecord
from hydra_plugins.pareto_sweeper._noise import NoiseFloor, NoiseFloors, measure_floors
from hydra_plugins.pareto_sweeper._pareto import (
    distinguishable,
    dominates,
    eps_dominates,
    hypervolume,
    hypervolume_curve,
    non_dominated,
)
from hydra_plugins.pareto_sweeper._reports import log_to_wandb
from hydra_plugins.pareto_sweeper._search import ParetoSearch
from hydra_plugins.pareto_sweeper._space import (
    Parameter,
    ParamSpace,
    SearchSpace,
    build_space,
    format_value,
    parametrization,
    parse_expression,
    parse_params,
    plain,
    sweep_values,
    to_overrides,
)

__all__ = [
    "ConstraintConfig", "NoiseFloor", "NoiseFloors", "ObjectiveConfig", "ParamSpace", "Parameter", "ParetoSearch",
    "SearchConfig", "SearchResult", "SearchSpace", "Trial", "TrialRecord", "build_space", "check_metric_names",
    "distinguishable", "dominates", "eps_dominates", "format_value", "hypervolume", "hypervolume_curve", "log_to_wandb",
    "measure_floors", "non_dominated", "parametrization", "parse_expression", "parse_params", "plain", "sweep_values",
    "to_overrides",
]  # fmt: skip
