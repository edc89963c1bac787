"""Multi-objective architecture search: the Hydra sweeper ``hydra/sweeper=pareto`` (sweeper.py) and the
search loop it shares with recipe=autodistill.

Hydra's plugin scan re-executes every module of this package whose name does not start with "_" (and
would redefine the config dataclasses under their users' feet), so the implementation lives in the
underscore modules, the scan only sees ``sweeper.py``, and the public API is re-exported here.
"""

from hydra_plugins.pareto_sweeper._pareto import dominates, hypervolume, non_dominated
from hydra_plugins.pareto_sweeper._search import (
    ConstraintConfig,
    ObjectiveConfig,
    ParetoSearch,
    SearchConfig,
    SearchResult,
    Trial,
    TrialRecord,
    log_to_wandb,
)
from hydra_plugins.pareto_sweeper._space import TABLE1, BlockSpaceConfig, SpaceConfig

__all__ = [
    "TABLE1", "BlockSpaceConfig", "ConstraintConfig", "ObjectiveConfig", "ParetoSearch", "SearchConfig",
    "SearchResult", "SpaceConfig", "Trial", "TrialRecord", "dominates", "hypervolume", "log_to_wandb", "non_dominated",
]  # fmt: skip
