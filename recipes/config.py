"""Typed config schemas: the YAML files under conf/ only set values, these dataclasses say what exists.

Every config group's YAML starts from a schema registered here (``defaults: [<group>_schema, _self_]``),
so a misspelt key fails at composition and ``OmegaConf.to_object`` runs each dataclass's
``__post_init__`` checks before any model is built or any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from callbacks.latency import LatencyConfig
from datamodules.classification import TaskDataConfig
from datamodules.pretraining import PretrainingDataConfig
from datamodules.squad import QATaskConfig
from modules.student_spec import StudentSpec
from modules.teacher import TeacherConfig
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
)


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
    run_dir: str | None = None  # filled in by run.py from Hydra's output dir
    tags: list = field(default_factory=list)


def register_configs(recipe_schemas: dict[str, type]) -> None:
    """Store the schemas where the YAML defaults lists find them (run.py calls it before Hydra composes).

    Args:
        recipe_schemas: recipe name -> its config dataclass, stored as ``recipe/<name>_schema`` (what
            conf/recipe/<name>.yaml's defaults list names). Every other group's schema is stored too.
    """
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="student", name="student_schema", node=StudentSpec)
    cs.store(group="teacher", name="teacher_schema", node=TeacherConfig)
    cs.store(group="data", name="data_schema", node=PretrainingDataConfig)
    cs.store(group="task", name="task_schema", node=TaskDataConfig)
    cs.store(group="task", name="squad_task_schema", node=QATaskConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="latency", name="latency_schema", node=LatencyConfig)
    cs.store(group="search", name="search_schema", node=SearchConfig)
    for name, schema in recipe_schemas.items():
        cs.store(group="recipe", name=f"{name}_schema", node=schema)
