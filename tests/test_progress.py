"""The training bar counts optimizer steps up to ``max_steps`` (one bar, the run's ETA), not batches per epoch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.progress import StepProgressBar


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, **trainer_args) -> StepProgressBar:
    bar = StepProgressBar()
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_args,
    )
    data = DataLoader(TensorDataset(torch.randn(6, 2)), batch_size=2)  # 3 batches an epoch
    trainer.fit(_Tiny(), data)
    return bar


@pytest.mark.parametrize(("accumulate", "max_steps"), [(1, 7), (2, 4)])
def test_step_bounded_run_shows_steps_of_max_steps(tmp_path, accumulate: int, max_steps: int) -> None:
    bar = _fit(tmp_path, max_steps=max_steps, accumulate_grad_batches=accumulate)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert task.description.startswith("Step"), task.description  # not "Epoch 2/-2"
    assert (task.completed, task.total) == (max_steps, max_steps)  # "7/7": one bar over the run's steps
    assert len(bar.progress.tasks) == 1  # not one bar per epoch


def test_epoch_bounded_run_keeps_lightnings_epoch_bar(tmp_path) -> None:
    bar = _fit(tmp_path, max_epochs=2)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert task.description.startswith("Epoch 1/1")
    assert (task.completed, task.total) == (3, 3)
