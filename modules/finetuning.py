"""Downstream fine-tuning: the GLUE metrics (torchmetrics) and the LightningModule that trains any HF
sequence classifier, with optional task KD from a fine-tuned teacher: ``(1 - γ)·CE + γ·KD``."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, F1Score, MatthewsCorrCoef
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from modules.losses import task_kd_loss

# GLUE's official metric(s) per task; the task score (the paper's table) is their mean, x100.
GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("acc",),
    "mrpc": ("f1", "acc"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "acc"),
    "mnli": ("acc",),
    "qnli": ("acc",),
    "rte": ("acc",),
    "wnli": ("acc",),
}


def metric_names(glue_task: str | None, num_labels: int) -> tuple[str, ...]:
    """The metrics of a task: GLUE's for a GLUE task; for a local task, by its label type."""
    if glue_task is not None:
        return GLUE_METRICS[glue_task]
    if num_labels == 1:
        return ("pearson", "spearman")
    return ("acc", "f1") if num_labels == 2 else ("acc",)


def build_metrics(names: tuple[str, ...], num_labels: int) -> MetricCollection:
    task = "binary" if num_labels == 2 else "multiclass"
    make: dict[str, Callable[[], nn.Module]] = {
        "acc": lambda: Accuracy(task=task, num_classes=num_labels),
        "f1": lambda: F1Score(task="binary"),  # GLUE's F1 (MRPC, QQP) is of the positive class
        "mcc": lambda: MatthewsCorrCoef(task=task, num_classes=num_labels),
        "pearson": PearsonCorrCoef,
        "spearman": SpearmanCorrCoef,
    }
    return MetricCollection({name: make[name]() for name in names})


def task_score(values: dict[str, float]) -> float:
    """The GLUE table's number for a task: the mean of its metrics, in percent."""
    return 100.0 * sum(values.values()) / len(values)


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """BERT's fine-tuning schedule: linear warm-up over the first steps, then linear decay to 0."""
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_length(module: L.LightningModule) -> int:
    """The optimizer steps the LR schedule spans: ``module.total_steps`` when given, else what the Trainer will
    run (epochs x batches per device / gradient accumulation: right under DDP and accumulation too)."""
    if module.total_steps:
        return int(module.total_steps)
    return max(1, int(module.trainer.estimated_stepping_batches))


class FinetuneModule(L.LightningModule):
    """Fine-tunes ``model`` (any ``AutoModelForSequenceClassification``) on a classification / regression task.

    Logs ``val/<metric>`` and ``val/score`` per validation (``val_mismatched/*`` for MNLI's second set),
    and keeps ``best`` (the validation metrics at the best ``val/score`` so far, the GLUE best-dev number).
    """

    def __init__(
        self,
        model: nn.Module,
        num_labels: int,
        metrics: tuple[str, ...],
        optimizer: Callable,
        total_steps: int | None = None,
        warmup_fraction: float = 0.1,
        val_names: tuple[str, ...] = ("val",),
        kd_teacher: nn.Module | None = None,
        kd_gamma: float = 0.0,
        kd_temperature: float = 1.0,
        on_best: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.regression = num_labels == 1
        self.optimizer_factory = optimizer
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.val_names = val_names
        self.val_metrics = nn.ModuleList([build_metrics(metrics, num_labels) for _ in val_names])
        self.test_metrics = build_metrics(metrics, num_labels)
        # The teacher is frozen, in eval mode, and not a submodule: never trained, never checkpointed.
        self._teacher = [kd_teacher.eval().requires_grad_(False)] if kd_teacher is not None else []
        self.kd_gamma = kd_gamma
        self.kd_temperature = kd_temperature
        self.on_best = on_best
        self.best: dict[str, float] = {}
        self.validated_at = -1  # the global step of the last full validation

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        ).logits

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        ce = self.task_loss(logits, batch["labels"])
        loss = ce
        if self._teacher and self.kd_gamma > 0:
            teacher = self._teacher[0].to(logits.device)
            with torch.no_grad():
                t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=batch.get("token_type_ids")).logits  # fmt: skip
            kd = task_kd_loss(student_logits=logits, teacher_logits=t_logits, temperature=self.kd_temperature,
                              regression=self.regression)  # fmt: skip
            loss = (1 - self.kd_gamma) * ce + self.kd_gamma * kd
            self.log("train/kd", kd)
        self.log("train/ce", ce)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1).float() if self.regression else logits.argmax(-1)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        logits = self(batch)
        self.val_metrics[dataloader_idx].update(self._predictions(logits), batch["labels"])
        self.log(f"{self.val_names[dataloader_idx]}/loss", self.task_loss(logits, batch["labels"]),
                 add_dataloader_idx=False)  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at = self.global_step
        current: dict[str, float] = {}  # every validation set's metrics; the first one ranks checkpoints
        for name, metrics in zip(self.val_names, self.val_metrics):
            values = {k: float(v) for k, v in metrics.compute().items()}
            metrics.reset()
            values = {
                k: (0.0 if math.isnan(v) else v) for k, v in values.items()
            }  # e.g. MCC of a constant guess
            for k, v in values.items():
                self.log(f"{name}/{k}", v)
            self.log(f"{name}/score", task_score(values))
            current.update(
                {**{f"{name}/{k}": v for k, v in values.items()}, f"{name}/score": task_score(values)}
            )
        ranked = f"{self.val_names[0]}/score"
        if not self.trainer.sanity_checking and current[ranked] > self.best.get(ranked, -math.inf):
            # MNLI's mismatched numbers come from the same step as the matched best (the paper's protocol).
            self.best = {**current, "best_step": float(self.global_step)}
            if self.on_best is not None:
                self.on_best(self.best)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_metrics.update(self._predictions(self(batch)), batch["labels"])

    def on_test_epoch_end(self) -> None:
        values = {k: float(v) for k, v in self.test_metrics.compute().items()}
        self.test_metrics.reset()
        for k, v in values.items():
            self.log(f"test/{k}", v)
        self.log("test/score", task_score(values))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "prediction": self._predictions(self(batch))}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        scheduler = linear_warmup_decay(optimizer, schedule_length(self), self.warmup_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
