"""Hydra schema of recipe=prune (import-light: run.py registers it without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.pruning_config import PRUNE_METHODS, CubicSchedule, RPPConfig, StructuredConfig
from recipes.config import check_optimizer, check_warmup_fraction


@dataclass
class PruneConfig:
    """recipe=prune: prune a BERT encoder (the teacher by default) on the corpus while it distils from its unpruned
    self, then save it (``<run dir>/student``) with the zeros baked in, or smaller (structured). recipes/prune.py."""

    name: str = "prune"
    method: str = "magnitude"  # magnitude (Gordon et al. 2020) | rpp (Guo et al. 2019) | structured (heads + FFN)
    model: str = "teacher"  # the teacher group's model, or a saved BERT-family dir (stock BERT, a pruned one)
    sparsity: float = 0.5  # magnitude: the target fraction of zero encoder linear weights
    schedule: CubicSchedule = field(default_factory=CubicSchedule)  # magnitude: Zhu & Gupta over the run
    rpp: RPPConfig = field(default_factory=RPPConfig)
    structured: StructuredConfig = field(default_factory=StructuredConfig)
    # optimizer steps of the run: the distillation recipes' name, so the leaderboard's shared corpus budget
    # (recipe.pretrain_steps) sets it for this stage too
    regular_steps: int = 200
    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 0.01,
                                 "foreach": True}  # fmt: skip
    )
    warmup_fraction: float = 0.05
    attention: float = 1.0  # weight of L_MHA per layer (modules/pruning_distill.py)
    feature: float = 1.0  # weight of L_FM per layer
    val_every_n_steps: int | None = None  # null: validate once, at the end
    checkpoint_every_n_steps: int = 50
    resume: bool = True  # continue from <run dir>/checkpoints/last.ckpt when it exists
    save_student: bool = True
    measure_latency: bool = True  # dense p50 of the model before and after pruning (latency group)

    def __post_init__(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"recipe.method must be one of {PRUNE_METHODS}, got {self.method!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"recipe.sparsity (fraction of zero weights) must be in [0, 1), got {self.sparsity}")
        self.schedule.check("recipe.schedule")
        self.rpp.check("recipe.rpp")
        self.structured.check("recipe.structured")
        if self.method == "structured" and self.structured.heads == 0 and self.structured.ffn == 0:
            raise ValueError("recipe.method=structured removes nothing: set recipe.structured.heads and/or "
                             "recipe.structured.ffn (fractions removed per layer) above 0")  # fmt: skip
        if self.regular_steps < 1:
            raise ValueError(f"recipe.regular_steps must be >= 1, got {self.regular_steps}")
        check_warmup_fraction(self.warmup_fraction, "recipe.warmup_fraction")
        check_optimizer(self.optimizer, "recipe.optimizer")
        if min(self.attention, self.feature) < 0 or self.attention + self.feature == 0:
            raise ValueError(f"recipe.attention and recipe.feature (loss weights) must be >= 0 and not both 0, got "
                             f"{self.attention} and {self.feature}")  # fmt: skip
        if self.val_every_n_steps is not None and self.val_every_n_steps < 1:
            raise ValueError(f"recipe.val_every_n_steps must be >= 1 or null, got {self.val_every_n_steps}")
        if self.checkpoint_every_n_steps < 1:
            raise ValueError(f"recipe.checkpoint_every_n_steps must be >= 1, got {self.checkpoint_every_n_steps}")
