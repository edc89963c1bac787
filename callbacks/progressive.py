"""Progressive knowledge transfer (AutoDistill §3.3.3, after MobileBERT): the callback that applies the
schedule of ``modules.progressive``.

Stage k (k = 1..K) trains block k and its projection with blocks 1..k−1 frozen (requires_grad off,
so AdamW skips them, and eval mode, so their outputs no longer change); the embeddings train with
block 1. The pre-training-distillation stage trains everything.
"""

from __future__ import annotations

import lightning as L
from torch import nn

from modules.progressive import Stage, stage_at


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
    ``projections`` and ``heads()``. Re-applied every batch, not only when the stage changes: a resumed run
    starts from a freshly built module and validation switches modes in between, and the stage must hold
    whatever happened before this batch; the cost is a loop over a few modules.
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
