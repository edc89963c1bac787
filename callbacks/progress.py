"""Progress bars: training (one bar over the optimizer steps when ``trainer.max_steps`` bounds the run) and
latency measurement (``MeasureBar``: rounds x repeats timed calls, with an ETA).

Lightning's RichProgressBar counts batches per epoch and titles the bar ``Epoch e/max_epochs - 1``, which reads
``Epoch 0/-2`` when the run is bounded by ``max_steps`` (``max_epochs=-1``) and restarts at 0 every epoch, so
its time column never estimates the end of the run. Every recipe here bounds its runs by steps.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# A measurement expected to take longer than this (from the warm-up's pace) shows a progress bar with its ETA.
SHOW_BAR_AFTER_S = 3.0


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


class MeasureBar:
    """What a user sees while a model is timed: a rich bar over one measurement's ``rounds x repeats`` calls,
    with its ETA, restarted for each retry. Display only; nothing here touches the timing or its result.

    Args:
        seconds: the measurement's expected duration; at or below ``SHOW_BAR_AFTER_S`` nothing is shown.
        calls: timed calls in one measurement (``rounds * repeats``).
        progress: a rich Progress to show it in (for tests); None: a transient one on the terminal.
    """

    def __init__(self, seconds: float, calls: int, progress: Progress | None = None):
        self.calls, self.task = calls, None
        self.progress = progress if progress is not None else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), transient=True)  # fmt: skip
        self.shown = seconds > SHOW_BAR_AFTER_S

    def __enter__(self) -> MeasureBar:
        if self.shown:
            try:
                self.progress.start()
            except LiveError:  # another live display (a Trainer's bar) holds the terminal: go without
                self.shown = False
        return self

    def __exit__(self, *exc) -> None:
        if self.shown:
            self.progress.stop()

    def start(self, attempt: int) -> None:
        """A new measurement (``attempt`` counts from 1): the bar restarts at 0."""
        if not self.shown:
            return
        description = "latency" if attempt == 1 else f"latency (re-measuring, attempt {attempt})"
        if self.task is None:
            self.task = self.progress.add_task(description, total=self.calls)
        else:
            self.progress.reset(self.task, total=self.calls, description=description)

    def tick(self) -> None:
        if self.shown and self.task is not None:
            self.progress.advance(self.task)
