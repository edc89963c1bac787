"""Progressive knowledge transfer (AutoDistill §3.3.3, after MobileBERT) as a schedule held as data.

Stage k (k = 1..K) trains block k and its projection with blocks 1..k−1 frozen (requires_grad off,
so AdamW skips them, and eval mode, so their outputs no longer change); the embeddings train with
block 1. A final pre-training-distillation stage trains everything for the remaining steps. The stage
is a pure function of the global step, so a resumed run re-enters the right stage by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from torch import nn

PRETRAINING = "pretraining"


@dataclass(frozen=True)
class Stage:
    """Global steps [start, end) train ``block`` (0-based) or, for the pre-training stage, everything (None)."""

    name: str
    start: int
    end: int
    block: int | None

    @property
    def steps(self) -> int:
        return self.end - self.start


def progressive_schedule(num_blocks: int, total_steps: int, progressive_ratio: float) -> list[Stage]:
    """Split ``total_steps`` into K block stages and one pre-training stage.

    ``progressive_ratio`` is progressive steps : pre-training steps (the paper's 0.48: 12k : 25k in
    flash, 240k : 500k in regular). Block stages get equal shares; rounding leftovers go to pre-training.

    Raises:
        ValueError: fewer steps than blocks (a block stage would have no step).
    """
    progressive = round(total_steps * progressive_ratio / (1.0 + progressive_ratio))
    per_block = progressive // num_blocks if num_blocks else 0
    if progressive_ratio > 0 and per_block == 0:
        raise ValueError(
            f"{total_steps} steps at progressive_ratio={progressive_ratio} leave {progressive} progressive steps "
            f"for {num_blocks} blocks; raise the step budget or lower recipe.progressive_ratio"
        )
    stages = [
        Stage(f"block_{k + 1}", k * per_block, (k + 1) * per_block, k) for k in range(num_blocks) if per_block
    ]
    start = stages[-1].end if stages else 0
    if total_steps - start <= 0:
        raise ValueError(
            f"no steps left for pre-training distillation out of {total_steps}; lower progressive_ratio"
        )
    stages.append(Stage(PRETRAINING, start, total_steps, None))
    return stages


def stage_at(schedule: list[Stage], step: int) -> Stage:
    """The stage that global step ``step`` belongs to (steps past the end stay in the last stage)."""
    for stage in schedule:
        if step < stage.end:
            return stage
    return schedule[-1]


def trainable_modules(
    stage: Stage, student: nn.Module, projections: nn.ModuleList, heads: list[nn.Module]
) -> list[nn.Module]:
    """What a stage trains. ``student`` is the encoder (``StudentModel``)."""
    if stage.block is None:
        return [student, projections, *heads]
    trained: list[nn.Module] = [student.blocks[stage.block], projections[stage.block]]
    if stage.block == 0:
        trained.append(student.embeddings)
    if stage.block > 0 and not isinstance(student.transitions[stage.block - 1], nn.Identity):
        trained.append(student.transitions[stage.block - 1])  # the map into block k belongs to block k
    return trained


def apply_stage(stage: Stage, student: nn.Module, projections: nn.ModuleList, heads: list[nn.Module]) -> None:
    """Freeze everything, then unfreeze what the stage trains; frozen parts go to eval mode (no dropout)."""
    everything = [student, projections, *heads]
    trained = trainable_modules(stage, student, projections, heads)
    for module in everything:
        module.requires_grad_(False)
        module.eval()
    for module in trained:
        module.requires_grad_(True)
        module.train()


class ProgressiveTransfer(L.Callback):
    """Applies the stage of the current global step before each training batch.

    Expects the LightningModule to expose ``schedule``, ``student`` (a ``StudentForPreTraining``),
    ``projections`` and ``heads()``. Re-applied every batch because Lightning puts the whole module
    back in train mode at each epoch start; the cost is a loop over a few modules.
    """

    def __init__(self) -> None:
        self.current: Stage | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        stage = stage_at(pl_module.schedule, trainer.global_step)
        apply_stage(stage, pl_module.student.student, pl_module.projections, pl_module.heads())
        if stage != self.current:
            self.current = stage
            pl_module.log("stage", float(stage.block + 1 if stage.block is not None else 0), on_step=True)
