"""The training progress bar: one bar over the optimizer steps when ``trainer.max_steps`` bounds the run.

Lightning's RichProgressBar counts batches per epoch and titles the bar ``Epoch e/max_epochs - 1``, which reads
``Epoch 0/-2`` when the run is bounded by ``max_steps`` (``max_epochs=-1``) and restarts at 0 every epoch, so
its time column never estimates the end of the run. Every recipe here bounds its runs by steps.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


def step_bounded(trainer: L.Trainer) -> bool:
    """Whether ``max_steps`` ends the run (Lightning's default ``-1`` leaves it to ``max_epochs``)."""
    return trainer.max_steps is not None and trainer.max_steps > 0


class StepProgressBar(RichProgressBar):
    """RichProgressBar whose training bar reads ``Step k/max_steps`` with the run's ETA when ``max_steps > 0``
    (one bar for the whole run, not one per epoch); otherwise exactly Lightning's epoch bar.

    The bar's count is ``trainer.global_step`` (optimizer steps, what ``max_steps`` counts), so it is right
    with gradient accumulation and after a resume from a checkpoint.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        if not step_bounded(self.trainer):
            return super()._get_train_description(current_epoch)
        return f"Step (epoch {current_epoch})"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not step_bounded(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return None
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        else:  # a new epoch: same bar, same count, only the epoch in the title moves
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description, visible=True)
        self.refresh()
        return None

    def _initialize_train_progress_bar_id(self) -> None:
        if not step_bounded(self.trainer):
            return super()._initialize_train_progress_bar_id()
        description = self._get_train_description(self.trainer.current_epoch)
        self.train_progress_bar_id = self._add_task(self.trainer.max_steps, description)
        assert self.progress is not None
        self.progress.update(self.train_progress_bar_id, completed=self.trainer.global_step)
        return None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not step_bounded(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
        return None
