"""Typed config schemas: the YAML files under conf/ only set values, these dataclasses say what exists.

Every config group's YAML starts from a schema registered here (``defaults: [/<group>_schema@_here_, _self_]``),
so a misspelt key fails at composition and ``OmegaConf.to_object`` runs each dataclass's
``__post_init__`` checks before any model is built or any data is read.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_method
from omegaconf import MISSING

from callbacks.latency_config import LatencyConfig
from datamodules.pretraining_config import PretrainingDataConfig
from datamodules.task_config import QATaskConfig, TaskDataConfig
from modules.student_spec import StudentSpec
from modules.teacher_config import TeacherConfig
from search.config import StudentSearchConfig as SearchConfig

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "bf16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "auto",  # resolve_precision: bf16 autocast where the hardware has bf16 matrix units, else fp32
)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision=auto`` as Lightning's precision on this machine; any other value unchanged.

    auto = ``bf16-mixed`` (bf16 autocast, fp32 weights and optimizer state) on a CPU with AMX bf16 tiles (Intel
    Sapphire Rapids and later: ``torch.cpu.get_capabilities()["amx_bf16"]``) or a CUDA GPU that supports bf16, else
    ``32-true``. On the project's 2-core AMX machine bf16 autocast made fine-tuning steps 1.4-1.5x and distillation
    1.2x faster with the same losses to 3 decimals (README, "Precision"); without AMX, CPU bf16 is emulated and slower.
    Resolved when the config is built, i.e. on the machine that trains (a SLURM job resolves it on its node), and
    recorded as resolved: a resumed run on hardware that resolves it otherwise is refused as another config.
    """
    if precision != "auto":
        return precision
    import torch  # here, not at module level: run.py --help imports this module and should not wait for torch

    if accelerator == "cpu":
        return "bf16-mixed" if torch.cpu.get_capabilities().get("amx_bf16") else "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


# Optimizer arguments torch checks when the optimizer is built (after the model and data are): the range each
# must lie in. A learning rate of 0 is accepted by torch but trains nothing, so it is refused here too.
_OPTIMIZER_RANGES = {
    "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "eps": (lambda v: v >= 0, ">= 0"),
    "momentum": (lambda v: v >= 0, ">= 0"),
    "dampening": (lambda v: v >= 0, ">= 0"),
}


# True while register_configs stores the schemas (their default_factory instances are built then).
_REGISTERING: ContextVar[bool] = ContextVar("registering_schemas", default=False)


def check_optimizer(optimizer: Any, key: str) -> None:
    """An optimizer config (``{_target_: <class>, _partial_: true, lr: ..., ...}``) that the optimizer will
    accept when it is built: checked when the config is read, not after the teacher and data have loaded.

    Args:
        optimizer: the config dict (a DictConfig or a plain dict).
        key: its full config key, e.g. ``recipe.optimizer``, quoted in errors.
    Raises:
        ValueError: no / an unimportable ``_target_``, an argument its signature lacks, a value out of range.
    """
    if not isinstance(optimizer, Mapping) or not optimizer.get("_target_"):
        raise ValueError(f"{key}: give {{_target_: <optimizer class>, _partial_: true, lr: ...}}, got {optimizer!r}")
    if _REGISTERING.get():
        # The schemas' own defaults, built while register_configs stores them: checking them would import torch
        # for `run.py --help` and every shell-completion TAB. A composed config is checked in full (to_object).
        return
    try:
        target = get_method(optimizer["_target_"])
    except Exception as err:  # hydra raises ImportError or its own error: either way unusable
        raise ValueError(f"{key}._target_={optimizer['_target_']!r} cannot be imported: {err}") from None
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, value in optimizer.items():
        if name.startswith("_"):
            continue
        if name not in params and not takes_any:
            raise ValueError(f"{key}.{name}: {optimizer['_target_']} takes no argument {name!r}")
        if name in _OPTIMIZER_RANGES:
            ok, bound = _OPTIMIZER_RANGES[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"{key}.{name} must be a number {bound}, got {value!r}")
        if name == "betas" and not (
            len(value) == 2 and all(isinstance(b, int | float) and 0 <= b < 1 for b in value)
        ):
            raise ValueError(f"{key}.betas must be two numbers in [0, 1), got {list(value)}")


def check_warmup_fraction(value: float, key: str) -> None:
    """A warm-up fraction of the steps: in [0, 1) (1 would leave no step after the warm-up)."""
    if not 0 <= value < 1:
        raise ValueError(f"{key} must be in [0, 1), got {value}")


@dataclass
class TrainerConfig:
    """Hydra schema of the ``trainer`` group: the arguments of ``lightning.Trainer`` that recipes expose."""

    accelerator: str = "cpu"
    devices: Any = 1  # int, "auto", or a list of device indices
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_find_unused_parameters_true | fsdp | deepspeed_stage_2 ...
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: int | None = None
    val_check_interval: float | None = None
    check_val_every_n_epoch: int | None = 1
    limit_val_batches: float | None = None
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    deterministic: bool = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    num_sanity_val_steps: int = 0

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"trainer.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.precision = resolve_precision(self.precision, self.accelerator)
        if self.accelerator == "cpu" and self.precision in ("16-mixed", "16-true"):
            raise ValueError(
                f"trainer.precision={self.precision} needs a GPU; on CPU use bf16-mixed or 32-true"
            )
        if self.num_nodes < 1:
            raise ValueError(f"trainer.num_nodes must be >= 1, got {self.num_nodes}")
        if self.accumulate_grad_batches < 1:
            raise ValueError(
                f"trainer.accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}"
            )
        # What Lightning's Trainer refuses when it is built, after the teacher and data have loaded.
        if self.max_epochs is not None and self.max_epochs < -1:
            raise ValueError(f"trainer.max_epochs must be >= -1 (-1: no limit) or null, got {self.max_epochs}")
        if self.log_every_n_steps < 0:
            raise ValueError(f"trainer.log_every_n_steps must be >= 0, got {self.log_every_n_steps}")
        if self.gradient_clip_val is not None and self.gradient_clip_val < 0:
            raise ValueError(f"trainer.gradient_clip_val must be >= 0 or null, got {self.gradient_clip_val}")
        if self.check_val_every_n_epoch is not None and self.check_val_every_n_epoch < 1:
            raise ValueError(
                f"trainer.check_val_every_n_epoch must be >= 1 or null, got {self.check_val_every_n_epoch}"
            )
        for name in ("val_check_interval", "limit_val_batches"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (isinstance(value, float) and value > 1 and not value.is_integer())):
                raise ValueError(
                    f"trainer.{name} must be a fraction in [0, 1] or a whole number of batches, got {value}"
                )
        if self.num_sanity_val_steps < -1:
            raise ValueError(f"trainer.num_sanity_val_steps must be >= -1, got {self.num_sanity_val_steps}")


@dataclass
class RunConfig:
    """The whole composed config of one run (``conf/run.yaml`` + the selected group options)."""

    recipe: Any = MISSING  # a recipe's own schema (see its module), selected with recipe=<name>
    student: StudentSpec = MISSING
    teacher: TeacherConfig = MISSING
    data: PretrainingDataConfig = MISSING
    task: Any = MISSING  # TaskDataConfig (classification, task_schema) or QATaskConfig (squad_task_schema)
    trainer: TrainerConfig = MISSING
    latency: LatencyConfig = MISSING  # how latency is measured (recipe=latency, and every distillation run)
    search: SearchConfig = (
        MISSING  # what recipe=autodistill searches, and how (hydra/sweeper=pareto has its own)
    )
    logger: Any = None  # {_target_: a Lightning logger class, ...}: a swappable edge, built by build_logger
    seed: int = 0
    # false: a run that succeeds deletes its Lightning checkpoints (kept on failure, to resume from)
    keep_checkpoints: bool = False
    run_dir: str | None = None  # filled in by run.py from Hydra's output dir
    tags: list = field(default_factory=list)


def register_configs(recipe_schemas: dict[str, type]) -> None:
    """Store the schemas where the YAML defaults lists find them (run.py calls it before Hydra composes).

    Every schema is stored at the root of the config tree, outside any group (``defaults:
    [/student_schema@_here_, _self_]``): Hydra's ``--help`` and shell completion list groups and their
    options only, and ``student=student_schema`` names no option, so a schema is never offered as a
    choice nor selectable on the command line.

    Args:
        recipe_schemas: recipe name -> its config dataclass, stored as ``recipe_<name>_schema`` (what
            conf/recipe/<name>.yaml's defaults list names). Every other group's schema is stored too.
    """
    token = _REGISTERING.set(True)
    try:
        _store(recipe_schemas)
    finally:
        _REGISTERING.reset(token)


def _store(recipe_schemas: dict[str, type]) -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="student_schema", node=StudentSpec)
    cs.store(name="teacher_schema", node=TeacherConfig)
    cs.store(name="data_schema", node=PretrainingDataConfig)
    cs.store(name="task_schema", node=TaskDataConfig)
    cs.store(name="squad_task_schema", node=QATaskConfig)
    cs.store(name="trainer_schema", node=TrainerConfig)
    cs.store(name="latency_schema", node=LatencyConfig)
    cs.store(name="search_schema", node=SearchConfig)
    for name, schema in recipe_schemas.items():
        cs.store(name=f"recipe_{name}_schema", node=schema)  # recipe=latency's is not latency_schema
