"""Recipe `finetune`: fine-tune a distilled student, any HF encoder, or the teacher on a downstream task.

    python run.py recipe=finetune                                       # the teacher on the offline sentiment task
    python run.py recipe=finetune recipe.model=outputs/autodistill/<time>/regular/baseline/student
    python run.py recipe=finetune recipe.model=<student dir> recipe.task_kd.teacher=<fine-tuned teacher>/model
    python run.py recipe=finetune task=glue task.glue_task=cola          # GLUE, with the network

Reads top to bottom: model + tokenizer (a student dir, a hub id / dir, or `teacher`: the teacher group's
model) -> task data (tokenised with that tokenizer, cached) -> optional task-KD teacher (a fine-tuned
classifier, frozen) -> LightningModule (CE or MSE, (1-γ)·CE + γ·KD with KD) -> Trainer, validation every
epoch, the best-dev model saved in HF format under <run dir>/model -> test metrics where the test split
has labels, test predictions in GLUE's submission format -> metrics.json.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import modules  # noqa: F401  (registers the student with the Auto classes)
from callbacks.latency import measure_latency
from datamodules.assets import is_local_path, resolve_path
from datamodules.classification import UNLABELLED, ClassificationDataModule
from modules.finetuning import FinetuneModule, metric_names
from recipes.common import build_logger, build_trainer, write_metrics
from recipes.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class TaskKDConfig:
    """Task-specific distillation from a fine-tuned teacher (TinyBERT's second stage): (1-γ)·CE + γ·KD."""

    teacher: str | None = None  # a fine-tuned classifier dir (e.g. <finetune run dir>/model); null: no KD
    gamma: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"recipe.task_kd.gamma must be in [0, 1], got {self.gamma}")
        if self.temperature <= 0:
            raise ValueError(f"recipe.task_kd.temperature must be > 0, got {self.temperature}")


@dataclass
class FinetuneConfig:
    """Hydra schema of recipe=finetune."""

    name: str = "finetune"
    # teacher (the teacher group's model) | a local dir (a distilled student: <run dir>/student) | a hub id
    model: str = "teacher"
    optimizer: Any = field(
        default_factory=lambda: {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 5e-5,
            "weight_decay": 0.01,
        }
    )
    epochs: int = 3
    max_steps: int | None = None  # cap on optimizer steps (demo scale); null: epochs decide
    warmup_fraction: float = 0.1
    task_kd: TaskKDConfig = field(default_factory=TaskKDConfig)
    save_model: bool = True
    measure_latency: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"recipe.epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"recipe.max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"recipe.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


def model_path(cfg: RunConfig) -> str:
    """The model to fine-tune, as transformers wants it: a local path or a hub id."""
    name = cfg.teacher.name_or_path if cfg.recipe.model == "teacher" else cfg.recipe.model
    if is_local_path(name) or name.startswith((".", "/", "~")):
        path = resolve_path(name)
        if not path.exists():
            raise FileNotFoundError(f"recipe.model={cfg.recipe.model!r} -> {path} does not exist")
        return str(path)
    return name


def run(cfg: RunConfig) -> dict[str, float]:
    recipe: FinetuneConfig = cfg.recipe
    if cfg.trainer.max_steps != -1:
        raise ValueError("trainer.max_steps is set by the recipe; use recipe.max_steps / recipe.epochs")
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # Model + its tokenizer; the task's labels decide the head.
    path = model_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=data.num_labels)
    log.info(
        "fine-tuning %s (%.2fM params) on %s: %s",
        path,
        model.num_parameters() / 1e6,
        cfg.task.name,
        data.split_sizes,
    )

    # Optional task-KD teacher: a classifier fine-tuned on the same task, with the same labels.
    teacher = None
    if recipe.task_kd.teacher:
        teacher_path = str(resolve_path(recipe.task_kd.teacher))
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
        if teacher.config.num_labels != data.num_labels:
            raise ValueError(
                f"recipe.task_kd.teacher has {teacher.config.num_labels} labels but task {cfg.task.name} has "
                f"{data.num_labels}: give a teacher fine-tuned on this task (recipe=finetune on its model first)"
            )

    steps_per_epoch = -(-data.split_sizes["train"] // cfg.task.batch_size)
    total_steps = recipe.max_steps or recipe.epochs * steps_per_epoch
    model_dir = run_dir / "model"

    def save_best(best: dict[str, float]) -> None:  # the best-dev model, in HF format
        if recipe.save_model and trainer.is_global_zero:
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)

    val_names = tuple(
        "val" if n == "validation" else n.replace("validation", "val") for n in data.validation_splits
    )
    module = FinetuneModule(
        model=model,
        num_labels=data.num_labels,
        metrics=metric_names(cfg.task.glue_task if cfg.task.source == "glue" else None, data.num_labels),
        optimizer=instantiate(recipe.optimizer),
        total_steps=total_steps,
        warmup_fraction=recipe.warmup_fraction,
        val_names=val_names,
        kd_teacher=teacher,
        kd_gamma=recipe.task_kd.gamma if teacher is not None else 0.0,
        kd_temperature=recipe.task_kd.temperature,
        on_best=save_best,
    )
    callbacks = [RichProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = build_trainer(
        cfg.trainer, str(run_dir), build_logger(cfg.logger, str(run_dir)), callbacks,
        max_steps=total_steps, max_epochs=recipe.epochs if recipe.max_steps is None else None,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    if (
        module.validated_at != trainer.global_step
    ):  # a step budget that ends mid-epoch: judge the final model too
        trainer.validate(module, datamodule=data, verbose=False)

    metrics: dict[str, float] = dict(module.best)
    metrics.update({"params": float(model.num_parameters()), "steps": float(trainer.global_step),
                    "train_examples": float(data.split_sizes["train"])})  # fmt: skip
    # Test split: metrics where it has gold labels, and predictions to submit (GLUE's test labels are hidden).
    if "test" in data.split_sizes and recipe.save_model and model_dir.exists():
        best = AutoModelForSequenceClassification.from_pretrained(model_dir)
        module.model = best
        labels = data._split("test").labels
        if bool((labels != UNLABELLED).all()):
            trainer.test(module, datamodule=data, verbose=False)
            metrics.update(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            )
        outputs = trainer.predict(module, datamodule=data)
        write_predictions(run_dir / "predictions" / f"{cfg.task.name}.tsv", outputs, data.label_names)
    if trainer.is_global_zero and recipe.measure_latency:
        metrics.update(measure_latency(model, cfg.latency).as_metrics())
    metrics["wall_time_s"] = time.perf_counter() - started
    log.info("best dev: %s", {k: round(v, 4) for k, v in module.best.items()})
    return write_metrics(run_dir, metrics)


def write_predictions(path: Path, outputs: list[dict[str, torch.Tensor]], label_names: list[str]) -> None:
    """GLUE's submission format: ``index<TAB>prediction`` (a label name, or a float for regression)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    index = torch.cat([o["index"] for o in outputs]).tolist()
    preds = torch.cat([o["prediction"] for o in outputs]).tolist()
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "prediction"])
        for i, p in sorted(zip(index, preds)):
            writer.writerow(
                [i, f"{p:.3f}" if isinstance(p, float) else (label_names[p] if label_names else p)]
            )
