"""Hydra schema of recipe=leaderboard (import-light: run.py registers it without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from recipes.methods import METHODS, MISSING


def _default_methods() -> list[str]:
    return list(METHODS)


@dataclass
class LeaderboardConfig:
    """recipe=leaderboard: which methods, which seeds, and the budget they all share (recipes/leaderboard.py)."""

    name: str = "leaderboard"
    methods: list[str] = field(default_factory=_default_methods)  # recipes/methods.py; the teacher always runs first
    seeds: list[int] = field(default_factory=lambda: [0])
    dir: str | None = None  # where the cells live; null: the run dir. Share it between a sweep's jobs.
    # The budget every method gets (pipelines keep their own): optimizer steps per corpus stage (distillation, MLM)
    pretrain_steps: int = 250
    student_epochs: int = 2  # fine-tuning of every student on the task (AutoDistill's demo: 2 epochs at 5e-4)
    student_lr: float = 5e-4
    teacher_epochs: int = 1  # the teacher's own fine-tuning (MiniLM: dev 84.9 after 1 epoch at 1e-4)
    teacher_lr: float = 1e-4
    task_kd: bool = True  # every student learns from the fine-tuned teacher's logits too (γ, T: recipe=finetune's)
    serving_batch_size: int = 32  # the second latency column: throughput at a serving batch (sequences / s)
    # Extra overrides for every stage of one method, after its own: "+recipe.extra.pkd=['recipe.task_kd.gamma=0.7']"
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("recipe.methods is empty; name at least one of " + ", ".join(METHODS))
        for name in self.methods:
            if name in MISSING:
                raise ValueError(f"recipe.methods: {name} is not available yet: {MISSING[name]}")
            if name not in METHODS:
                raise ValueError(f"recipe.methods: unknown method {name!r}; choose from {sorted(METHODS)}")
        unknown = sorted(set(self.extra) - set(METHODS))
        if unknown:
            raise ValueError(f"recipe.extra names unknown methods {unknown}; choose from {sorted(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"recipe.methods lists a method twice: {self.methods}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"recipe.seeds must be distinct and non-empty, got {self.seeds}")
        for name in ("pretrain_steps", "student_epochs", "teacher_epochs", "serving_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("student_lr", "teacher_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"recipe.{name} must be > 0, got {getattr(self, name)}")
