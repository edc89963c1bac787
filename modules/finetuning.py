"""Downstream fine-tuning: the GLUE metrics (torchmetrics) and the LightningModule that trains any HF
sequence classifier, with optional task KD from a fine-tuned teacher: ``(1 - γ)·CE + γ·KD``, plus the intermediate
terms of PKD or TinyBERT's task stage (``+ β·L_inter``, modules/task_intermediate.py); rows without a gold label
(PD's transfer text) give KD and no CE."""

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

from core.seeding import mix_seed
from datamodules.glue import GLUE_TASKS
from modules.kd_logits import MEMO, teacher_fingerprint
from modules.losses import NO_KD, KDSettings, mix_kd, task_kd_loss
from modules.task_intermediate import IntermediateDistiller, encode


def metric_names(glue_task: str | None, num_labels: int) -> tuple[str, ...]:
    """The metrics of a task: GLUE's for a GLUE task; for a local task, by its label type."""
    if glue_task is not None:
        return GLUE_TASKS[glue_task].metrics  # the official ones; the task score is their mean x 100
    if num_labels == 1:
        return ("pearson", "spearman")
    return ("acc", "f1") if num_labels == 2 else ("acc",)


def build_metrics(names: tuple[str, ...], num_labels: int) -> MetricCollection:
    """torchmetrics for ``names`` (acc, f1, mcc, pearson, spearman). Raises KeyError for an unknown name."""
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
    """BERT's fine-tuning schedule: linear warm-up over the first steps, then linear decay to 0.

    Not transformers' ``get_linear_schedule_with_warmup``: that one warms up as step/w, so its first step runs at
    LR 0 (a wasted step), where this one runs step s at (s + 1)/w; after the warm-up they agree.
    ``tests/test_finetune.py::test_linear_warmup_decay_vs_transformers`` pins the difference; switching
    would change every fine-tuning run's numbers.

    Args:
        total_steps: optimizer steps the schedule spans; warmup_fraction: of them, in [0, 1).
    Returns:
        a per-step ``LambdaLR`` (multiplier of the optimizer's LR).
    """
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


# ----------------------------------------------------------------------------------------------------------------
# Plumbing shared by FinetuneModule and QAModule (plain functions, not a base class: STYLE 2).
#
# The best-dev model is saved by the recipe's ``on_best`` hook, not Lightning's ModelCheckpoint: the contract is an
# HF-format model dir (``save_pretrained``, loadable by AutoModel*), not a Lightning .ckpt, and the ranking is
# the task score computed here at validation end.
# ----------------------------------------------------------------------------------------------------------------


def frozen_teacher(teacher: nn.Module | None) -> list[nn.Module]:
    """The KD teacher, frozen and in eval mode, in a list: a list hides it from ``nn.Module``'s registry, so it is
    never trained, moved by Lightning as a submodule, or checkpointed. Empty without a teacher."""
    return [teacher.eval().requires_grad_(False)] if teacher is not None else []


def teacher_for_step(module: L.LightningModule, device: torch.device, needed: bool | None = None) -> nn.Module | None:
    """The frozen teacher on ``device`` when this step distils (a teacher, and ``needed``: by default γ > 0), else
    None."""
    if module._teacher and (module.kd.gamma > 0 if needed is None else needed):
        return module._teacher[0].to(device)
    return None


def log_training_loss(
    module: L.LightningModule,
    ce: torch.Tensor,
    kd: torch.Tensor | None,
    terms: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The training loss, logged as train/{kd, ce, <term>, loss}: ``ce``, or ``(1 − γ)·ce + γ·kd`` with KD, plus
    ``β·Σ terms`` (PKD: ``β·L_PT``; TinyBERT: ``β·(L_attn + L_hidn + L_embd)``); with ``module.intermediate.only``
    (TinyBERT's stage 1) ``β·Σ terms`` alone (``ce`` is only logged)."""
    loss = ce
    if kd is not None:
        loss = mix_kd(ce, kd, module.kd.gamma)
        module.log("train/kd", kd)
    if terms:
        for name, value in terms.items():
            module.log(f"train/{name}", value)
        weighted = module.intermediate.beta * sum(terms.values())
        loss = weighted if module.intermediate.only else loss + weighted
    module.log("train/ce", ce)
    module.log("train/loss", loss, prog_bar=True)
    return loss


def log_task_metrics(
    module: L.LightningModule, metrics: MetricCollection, prefix: str, nan_to_zero: bool, prog_bar: bool = False
) -> tuple[dict[str, float], float]:
    """Compute and reset ``metrics``, log each as ``<prefix>/<name>`` and the task score as ``<prefix>/score``.

    ``nan_to_zero``: a metric that is undefined (nan, e.g. MCC of a constant guess) counts as 0, so it can be
    ranked. Returns the values and the task score (percent).
    """
    values = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    if nan_to_zero:
        values = {k: (0.0 if math.isnan(v) else v) for k, v in values.items()}
    score = task_score(values)
    for k, v in values.items():
        module.log(f"{prefix}/{k}", v)
    module.log(f"{prefix}/score", score, prog_bar=prog_bar)
    return values, score


def is_new_best(best: dict[str, float], current: dict[str, float], ranked: str) -> bool:
    """Whether ``current[ranked]`` beats the best so far (``best`` is empty before the first validation)."""
    return current[ranked] > best.get(ranked, -math.inf)


def seed_step(module: L.LightningModule, batch_idx: int) -> None:
    """Seed this training step's dropout from (seed, step, rank, micro-batch): a run resumed from a checkpoint
    draws exactly what an uninterrupted one would (Lightning does not checkpoint the global RNG)."""
    torch.manual_seed(mix_seed(module.seed, module.global_step, module.global_rank, batch_idx))


def save_best_state(module: L.LightningModule, checkpoint: dict, *names: str) -> None:
    """Put the best-dev tracking (``best``, ``validated_at`` and ``names``) into a Lightning checkpoint, so a
    resumed run ranks its validations against the best before the kill and saves no worse model over it."""
    checkpoint["finetune"] = {name: getattr(module, name) for name in ("best", "validated_at", *names)}


def load_best_state(module: L.LightningModule, checkpoint: dict) -> None:
    """Restore what ``save_best_state`` saved (a checkpoint without it leaves the fresh state)."""
    for name, value in checkpoint.get("finetune", {}).items():
        setattr(module, name, value)


def warmup_decay_optimizer(module: L.LightningModule, parameters) -> dict:
    """``configure_optimizers``' answer: the module's optimizer factory on ``parameters``, stepped per batch by
    ``linear_warmup_decay`` over ``schedule_length(module)`` with ``module.warmup_fraction``."""
    # frozen weights (requires_grad=False, e.g. a user's frozen encoder) get no optimizer state and no weight decay
    optimizer = module.optimizer_factory([p for p in parameters if p.requires_grad])
    scheduler = linear_warmup_decay(optimizer, schedule_length(module), module.warmup_fraction)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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
        kd: KDSettings = NO_KD,
        on_best: Callable[[dict[str, float]], None] | None = None,
        seed: int = 0,
        intermediate: IntermediateDistiller | None = None,
    ) -> None:
        super().__init__()
        # from_pretrained returns a model in eval mode and Lightning keeps each submodule's mode through
        # fit: without this, fine-tuning would run with dropout off.
        self.model = model.train()
        self.seed = seed
        self.num_labels = num_labels
        self.regression = num_labels == 1
        self.optimizer_factory = optimizer
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.val_names = val_names
        self.val_metrics = nn.ModuleList([build_metrics(metrics, num_labels) for _ in val_names])
        self.test_metrics = build_metrics(metrics, num_labels)
        self._teacher = frozen_teacher(kd_teacher)
        self._teacher_key = teacher_fingerprint(kd_teacher) if kd_teacher is not None else ""
        self.kd = kd
        # PKD / TinyBERT's intermediate terms and their projections (trained, checkpointed, not saved in the model)
        self.intermediate = intermediate
        self.on_best = on_best
        self.best: dict[str, float] = {}
        self.validated_at = -1  # the global step of the last full validation

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        ).logits

    def task_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CE (MSE for regression) averaged over the rows; with ``labelled`` (B,) bool, over the labelled rows only:
        an unlabelled (transfer) row adds nothing, not even a gradient (0 when no row of the batch is labelled)."""
        if labelled is not None:
            weights = labelled.to(torch.float32)  # (B,)
            if self.regression:
                per_row = (logits.squeeze(-1).float() - labels.float()).pow(2)
            else:  # an unlabelled row's placeholder label (-1) is read as class 0, then weighted by 0
                per_row = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none")
            return (per_row * weights).sum() / weights.sum().clamp_min(1.0)
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seed_step(self, batch_idx)
        distiller, terms = self.intermediate, None
        teacher = teacher_for_step(self, batch["input_ids"].device, self.kd.gamma > 0 or distiller is not None)
        if distiller is not None:  # PKD / TinyBERT: both models' layers, so the teacher runs every step
            student = encode(self.model, batch, distiller.needs_scores)
            with torch.no_grad():
                taught = encode(teacher, batch, distiller.needs_scores)
            logits, t_logits = student.logits, taught.logits
            terms = distiller(student=student, teacher=taught, attention_mask=batch["attention_mask"])
        else:
            logits = self(batch)
            # Encoded once per row for every student of this process (modules/kd_logits.py).
            t_logits = MEMO.logits(teacher, self._teacher_key, batch) if teacher is not None else None
        ce = self.task_loss(logits, batch["labels"], batch.get("labelled"))
        kd = None
        if t_logits is not None and self.kd.gamma > 0 and not (distiller is not None and distiller.only):
            kd = task_kd_loss(student_logits=logits, teacher_logits=t_logits, temperature=self.kd.temperature,
                              regression=self.regression)  # fmt: skip
        return log_training_loss(self, ce, kd, terms)

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
            values, score = log_task_metrics(self, metrics, name, nan_to_zero=True)
            current.update({**{f"{name}/{k}": v for k, v in values.items()}, f"{name}/score": score})
        ranked = f"{self.val_names[0]}/score"
        # TinyBERT's stage 1 trains no head yet: its last model is the one to keep, not the best-scoring one
        keep_last = self.intermediate is not None and self.intermediate.only
        if not self.trainer.sanity_checking and (keep_last or is_new_best(self.best, current, ranked)):
            # MNLI's mismatched numbers come from the same step as the matched best (the paper's protocol).
            self.best = {**current, "best_step": float(self.global_step)}
            if self.on_best is not None:
                self.on_best(self.best)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_metrics.update(self._predictions(self(batch)), batch["labels"])

    def on_test_epoch_end(self) -> None:
        log_task_metrics(self, self.test_metrics, "test", nan_to_zero=False)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "prediction": self._predictions(self(batch))}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_best_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_best_state(self, checkpoint)

    def configure_optimizers(self):
        extra = list(self.intermediate.parameters()) if self.intermediate is not None else []
        return warmup_decay_optimizer(self, [*self.model.parameters(), *extra])
