"""The multi-objective Hydra sweeper. Its schema is registered as ``hydra/sweeper=pareto_base``: a project
ships a preset that extends it with its space, objectives and pre-trial hook (``defaults: [pareto_base]``),
or everything comes from the command line:

    python app.py -m hydra/sweeper=pareto_base 'lr=tag(log, interval(1e-4,1e-2))' 'depth=range(2,7)' \
        'hydra.sweeper.objectives=[{name: val/acc, direction: max}, {name: time_s, direction: min}]'
    python app.py -m hydra/sweeper=pareto_base hydra.sweeper.space._target_=my.Space ...

Each trial is a Hydra job (any launcher) whose overrides set the proposed values; its return value (a
metrics dict) supplies the objectives. Sweep expressions on the command line join the searched space
(``space.params``); plain overrides apply to every trial. The loop, ledger and reports: ``_search.py``.
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

from hydra_plugins.pareto_sweeper._checks import check_metric_names, check_parallel_latency
from hydra_plugins.pareto_sweeper._config import ConstraintConfig, ObjectiveConfig, SearchConfig
from hydra_plugins.pareto_sweeper._ledger import SearchResult, Trial
from hydra_plugins.pareto_sweeper._reports import log_to_wandb
from hydra_plugins.pareto_sweeper._search import ParetoSearch
from hydra_plugins.pareto_sweeper._space import parametrization, to_overrides

log = logging.getLogger(__name__)


@dataclass
class ParetoSweeperConf:
    """``hydra.sweeper.*``: the SearchConfig fields, plus a baseline and the pre-training check.

    ``space``: ``{_target_: <a SearchSpace class>, ...}`` (default: the generic ``ParamSpace``, fed by sweep
    expressions on the command line). ``objectives``: required (the metrics the trials return).
    """

    _target_: str = "hydra_plugins.pareto_sweeper.sweeper.ParetoSweeper"
    # The space's own _target_ is built by the sweeper, after the command line's sweeps joined its params.
    _recursive_: bool = False
    optimizer: str = "bo"
    budget: int = 20
    num_workers: int = 1
    seed: int = 0
    space: Any = field(default_factory=lambda: {"_target_": "hydra_plugins.pareto_sweeper.ParamSpace", "params": []})
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    constraints: list[ConstraintConfig] = field(default_factory=list)
    max_proposals: int | None = None
    report_columns: list[str] = field(default_factory=list)  # metrics copied into pareto.csv beside the objectives
    invalid_if: list[str] = field(default_factory=list)  # flags a trial sets when its metrics are untrustworthy
    retry_failed: bool = False  # on resume, run the ledger's failed trials again
    # Noise floors (SearchConfig): objectives with noise=null are measured by noise_seeds re-runs of the baseline
    # (or the first finished trial), each a job with the override <seed_key>=<seed + k>; 0: none.
    noise_seeds: int = 1
    noise_scale: float = 1.0
    seed_key: str = "seed"
    # Overrides of a reference trial run first (marked on the plot; the default hypervolume reference),
    # e.g. [student=mobilebert_baseline, student.num_blocks=4]. null: none.
    baseline: list[str] | None = None
    # "module:function" computing constraint metrics without training: (trial config, names) -> dict.
    pretrial: str | None = None
    # "module:function": (trial config) -> the metric names a trial reports; objectives and constraints are
    # checked against them before any trial. It may raise to refuse a config that cannot run (e.g. no GPU).
    metric_names: str | None = None
    # Parallel trials on this machine (num_workers > 1, a local launcher) with a latency objective / constraint
    # are refused: a latency timed while another trial trains is meaningless. true: run them anyway.
    allow_parallel_latency: bool = False


# Not "pareto": a project's own conf/hydra/sweeper/pareto.yaml (its preset, extending this) would shadow a
# ConfigStore node of the same name, and could not name it in its defaults list.
ConfigStore.instance().store(
    group="hydra/sweeper", name="pareto_base", node=ParetoSweeperConf, provider="pareto_sweeper"
)


class ParetoSweeper(Sweeper):
    """Hydra's side of the search: composes trials' overrides, launches them, runs ``ParetoSearch``."""

    def __init__(self, **settings: Any) -> None:
        plain = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
                 for k, v in settings.items()}  # fmt: skip
        self.baseline = plain.pop("baseline", None)
        self.pretrial_target = plain.pop("pretrial", None)
        self.metric_names_target = plain.pop("metric_names", None)
        self.allow_parallel_latency = plain.pop("allow_parallel_latency", False)
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
        """Run the search over the command line's sweep expressions and the configured space.

        Raises:
            ValueError: a bad setting, a sweep Hydra cannot search (e.g. glob), a misspelt key in the
                baseline or the first proposal's overrides.
        """
        assert self.config is not None and self.launcher is not None
        args = split_arguments(arguments)
        fixed, swept = args.fixed, args.swept
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
        self.check_before_trials(cfg, fixed)
        base_seed = self.trial_seed(cfg, fixed)
        # Only constraints need the pre-training check (and its imports: torch, the student).
        pretrial_fn = _import(self.pretrial_target, "pretrial") if self.pretrial_target and cfg.constraints else None
        if (
            pretrial_fn
            and any(c.name.startswith("latency/") for c in cfg.constraints)
            and not _local(self.launcher)
        ):
            log.warning(
                "latency constraints are checked before training on this machine (%s), but trials run through %s: "
                "run the sweep on the target device type, or constrain a metric that does not depend on the machine",
                os.uname().nodename, type(self.launcher).__name__,
            )  # fmt: skip

        jobs = _Jobs(self.launcher, self.hydra_context, self.config, fixed, pretrial_fn)
        # In-process jobs (the basic launcher) draw Lightning's progress bar: ours would fight it for the terminal.
        progress = "log" if type(self.launcher).__name__ == "BasicLauncher" else "bar"
        result = ParetoSearch(
            cfg, sweep_dir, jobs.launch, jobs.pretrial if pretrial_fn else None, baseline, progress=progress,
            base_seed=base_seed,
        ).run()
        log_to_wandb(result, cfg, self.config.get("logger"))
        log.info(
            "Pareto front (%d of %d trials) in %s/pareto.csv",
            len(result.front),
            len(result.records),
            sweep_dir,
        )
        return result


    def trial_seed(self, cfg: SearchConfig, fixed: list[str]) -> int:
        """The seed a trial runs with (its composed config's ``cfg.seed_key``; null counts as 0): seed repeats
        run with it + 1, + 2, ... 0 when no seed repeats are needed.

        Raises:
            ValueError: seed repeats are needed but the trial config has no integer at ``cfg.seed_key``.
        """
        if not cfg.repeats:
            return 0
        assert self.hydra_context is not None and self.config is not None
        trial_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, fixed + _sample(cfg))
        missing = object()
        seed = OmegaConf.select(trial_cfg, cfg.seed_key, default=missing)
        if seed is None:
            return 0
        if not isinstance(seed, int) or isinstance(seed, bool):
            found = "no such key" if seed is missing else f"{seed!r} there"
            raise ValueError(
                f"hydra.sweeper.seed_key={cfg.seed_key}: the trial config has {found}, not an integer seed; "
                "seed repeats (the noise floors of objectives with noise=null) override it: name the config's seed "
                "(hydra.sweeper.seed_key=...), give each objective a noise, or set hydra.sweeper.noise_seeds=0"
            )
        return seed

    def check_before_trials(self, cfg: SearchConfig, fixed: list[str]) -> None:
        """What fails every trial, checked once before the first: metric names, the device, parallel latency.

        Raises:
            ValueError: an objective / constraint the trials do not report, or parallel local latency trials.
            RuntimeError: whatever the ``metric_names`` hook raises for a config this machine cannot run.
        """
        check_parallel_latency(cfg, type(self.launcher).__name__, _local(self.launcher), self.allow_parallel_latency)
        if self.metric_names_target:
            assert self.hydra_context is not None and self.config is not None
            names_fn = _import(self.metric_names_target, "metric_names")
            trial_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, fixed + _sample(cfg))
            check_metric_names(cfg, names_fn(trial_cfg), f"hydra.sweeper.metric_names={self.metric_names_target}")


@dataclass
class _Jobs:
    """Trials as Hydra jobs: the command line's fixed overrides plus each trial's own."""

    launcher: Any
    hydra_context: HydraContext
    config: DictConfig
    fixed: list[str]
    pretrial_fn: Any  # (trial config, names) -> metrics, or None

    def launch(self, trial: Trial) -> Any:
        overrides = self.fixed + trial.overrides
        job_idx = trial.index if isinstance(trial.index, int) else -1
        if not isinstance(trial.index, int):  # the baseline and seed repeats: a subdir named by the index
            overrides = [o for o in overrides if not o.startswith("hydra.sweep.subdir=")]
            overrides.append(f"hydra.sweep.subdir={trial.index}")
        (ret,) = self.launcher.launch([overrides], initial_job_idx=job_idx)
        return ret.return_value  # re-raises the job's exception when it failed

    def pretrial(self, trial: Trial, names: set[str]) -> dict[str, float]:
        trial_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, self.fixed + trial.overrides)
        return self.pretrial_fn(trial_cfg, names)


@dataclass
class Arguments:
    """The command line's overrides: ``fixed`` apply to every trial, ``swept`` ({key: expression}) join the space."""

    fixed: list[str]
    swept: dict[str, str]


def split_arguments(arguments: list[str]) -> Arguments:
    """Command-line overrides -> Arguments.

    Raises:
        ValueError: a sweep other than choice / range / interval.
    """
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
    return Arguments(fixed, swept)


def _sample(cfg: SearchConfig) -> list[str]:
    return to_overrides(cfg.space.assignments(parametrization(cfg.space, cfg.seed).value))


def _local(launcher: Any) -> bool:
    """Trials run on this machine (so latency measured here is the trials' latency). submitit's local
    launcher is ``LocalLauncher``."""
    return type(launcher).__name__ in ("BasicLauncher", "LocalLauncher", "JoblibLauncher")


def _import(target: str, key: str):
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"hydra.sweeper.{key}={target!r}: write it as 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"hydra.sweeper.{key}={target!r} cannot be imported: {err}") from None
