"""``hydra/sweeper=pareto``: multi-objective architecture search over any recipe of run.py.

    python run.py -m hydra/sweeper=pareto recipe=flash_distill hydra.sweep.dir=multirun/search1
    python run.py -m hydra/sweeper=pareto hydra.sweeper.optimizer=de hydra.sweeper.budget=50 \
        hydra.sweeper.constraints='[{name: latency/p50_ms, max: 8}]' \
        hydra/launcher=submitit_slurm hydra.sweeper.num_workers=8

Each trial is a Hydra job (any launcher) whose overrides set the proposed student; its return value
(the recipe's metrics dict) supplies the objectives. Sweep expressions on the command line
(``recipe.optimizer.lr='tag(log, interval(1e-4,1e-3))'``) join the searched space; plain overrides apply
to every trial. The loop, ledger and reports are in ``_search.py``; see the README's "Search" section.
"""

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_plugins.pareto_sweeper._search import (
    ConstraintConfig,
    ObjectiveConfig,
    ParetoSearch,
    SearchConfig,
    SearchResult,
    Trial,
    default_objectives,
    log_to_wandb,
)
from hydra_plugins.pareto_sweeper._space import SpaceConfig, to_overrides

log = logging.getLogger(__name__)


@dataclass
class ParetoSweeperConf:
    """``hydra.sweeper.*``: the SearchConfig fields, plus a baseline and the pre-training check."""

    _target_: str = "hydra_plugins.pareto_sweeper.sweeper.ParetoSweeper"
    optimizer: str = "bo"
    budget: int = 20
    num_workers: int = 1
    seed: int = 0
    space: SpaceConfig = field(default_factory=SpaceConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=default_objectives)
    constraints: list[ConstraintConfig] = field(default_factory=list)
    max_proposals: int | None = None
    # Overrides of a reference trial run first (marked on the plot; the default hypervolume reference),
    # e.g. [student=mobilebert_baseline, student.num_blocks=4]. null: none.
    baseline: list[str] | None = None
    # "module:function" computing constraint metrics without training: (trial config, names) -> dict.
    pretrial: str | None = "recipes.distill:architecture_metrics"


ConfigStore.instance().store(
    group="hydra/sweeper", name="pareto", node=ParetoSweeperConf, provider="distill-recipes"
)


class ParetoSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        plain = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
                 for k, v in settings.items()}  # fmt: skip
        self.baseline = plain.pop("baseline", None)
        self.pretrial_target = plain.pop("pretrial", None)
        self.settings = plain
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> SearchResult:
        assert self.config is not None and self.launcher is not None
        fixed, swept = split_arguments(arguments)
        settings = dict(self.settings)
        space = dict(settings.get("space") or {})
        space["params"] = [*(space.get("params") or []), *(f"{k}={v}" for k, v in swept.items())]
        settings["space"] = space
        cfg = SearchConfig(**settings)
        if type(self.launcher).__name__ == "BasicLauncher" and cfg.num_workers > 1:
            log.warning(
                "hydra.sweeper.num_workers=%d, but the basic launcher runs one job at a time in this process; "
                "use hydra/launcher=submitit_local (or submitit_slurm) for parallel trials", cfg.num_workers
            )  # fmt: skip
            cfg.num_workers = 1
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        baseline = None
        if self.baseline:
            baseline = Trial(index="baseline", kind="baseline", name="baseline", value={}, assigned={},
                             overrides=[*self.baseline, "hydra.sweep.subdir=baseline"])  # fmt: skip
        # Fail on a misspelt key now, not in every trial: compose the baseline and one proposal.
        self.validate_batch_is_legal([fixed + t.overrides for t in [baseline] if t] + [fixed + _sample(cfg)])
        # Only constraints need the pre-training check (and its imports: torch, the student).
        pretrial_fn = _import(self.pretrial_target) if self.pretrial_target and cfg.constraints else None
        if (
            pretrial_fn
            and any(c.name.startswith("latency/") for c in cfg.constraints)
            and not _local(self.launcher)
        ):
            log.warning(
                "latency constraints are checked before training on this machine (%s), but trials run through %s: "
                "run the sweep on the target device type, or constrain params / flops_per_seq@128 instead",
                os.uname().nodename, type(self.launcher).__name__,
            )  # fmt: skip

        def launch(trial: Trial) -> Any:
            job_idx = trial.index if isinstance(trial.index, int) else -1  # the baseline: its own subdir
            (ret,) = self.launcher.launch([fixed + trial.overrides], initial_job_idx=job_idx)
            return ret.return_value  # re-raises the job's exception when it failed

        def pretrial(trial: Trial, names: set[str]) -> dict[str, float]:
            trial_cfg = self.hydra_context.config_loader.load_sweep_config(
                self.config, fixed + trial.overrides
            )
            return pretrial_fn(trial_cfg, names)

        # In-process jobs (the basic launcher) draw Lightning's progress bar: ours would fight it for the terminal.
        progress = "log" if type(self.launcher).__name__ == "BasicLauncher" else "bar"
        result = ParetoSearch(
            cfg, sweep_dir, launch, pretrial if pretrial_fn else None, baseline, progress=progress
        ).run()
        log_to_wandb(result, cfg, self.config.get("logger"))
        log.info(
            "Pareto front (%d of %d trials) in %s/pareto.csv",
            len(result.front),
            len(result.records),
            sweep_dir,
        )
        return result


def split_arguments(arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """Command-line overrides -> (applied to every trial, sweep expressions joining the space)."""
    fixed, swept = [], {}
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            if override.is_discrete_sweep() or override.is_range_sweep() or override.is_interval_sweep():
                swept[override.get_key_element()] = override.input_line.split("=", 1)[
                    1
                ]  # the expression, as typed
            else:
                raise ValueError(
                    f"{override.input_line}: the pareto sweeper takes choice / range / interval sweeps"
                )
        else:
            fixed.append(override.input_line)
    return fixed, swept


def _sample(cfg: SearchConfig) -> list[str]:
    from hydra_plugins.pareto_sweeper._space import assignments, parametrization

    return to_overrides(assignments(cfg.space, parametrization(cfg.space, cfg.seed).value))


def _local(launcher: Any) -> bool:
    """Trials run on this machine (so latency measured here is the trials' latency)."""
    return type(launcher).__name__ in ("BasicLauncher", "LocalLauncher", "JoblibLauncher")


def _import(target: str):
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"hydra.sweeper.pretrial={target!r}: write it as 'package.module:function'")
    return getattr(importlib.import_module(module), name)
