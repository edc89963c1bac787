"""Recipe `finetune`: fine-tune a distilled student, any HF encoder, or the teacher on a downstream task.

    python run.py recipe=finetune                                       # the teacher on the offline sentiment task
    python run.py recipe=finetune recipe.model=outputs/autodistill/<time>/regular/baseline/student
    python run.py recipe=finetune recipe.model=<student dir> recipe.task_kd.teacher=<fine-tuned teacher>/model
    python run.py recipe=finetune task=glue task.glue_task=cola          # GLUE, with the network
    python run.py recipe=finetune task=squad                             # SQuAD v1.1, with the network
    python run.py -m recipe=finetune ... recipe.optimizer.lr=1e-5,3e-5   # + <sweep dir>/finetune_table.md

Reads top to bottom: model + tokenizer (a student dir, a hub id / dir, or `teacher`: the teacher group's
model) -> task data (classification: datamodules/classification.py; QA: datamodules/squad.py, windows
over long contexts), tokenised with that tokenizer and cached -> the model with the task's head ->
optional task-KD teacher (fine-tuned on the task, frozen) -> LightningModule (modules/finetuning.py: CE
or MSE; modules/qa.py: span CE, post-processing to answer text; (1-γ)·CE + γ·KD with KD) -> Trainer,
validation every epoch, the best-dev model saved in HF format under <run dir>/model, last.ckpt every epoch (a
rerun resumes from it; deleted on success unless keep_checkpoints) -> classification: test metrics where the
test split has labels, test predictions in GLUE's submission format; SQuAD: the best-dev answers ->
metrics.json. A multirun's best-dev table: reports/finetune_table.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

import modules.auto  # noqa: F401  (registers the student with the Auto classes)
from callbacks.latency import measure_latency
from callbacks.progress import StepProgressBar
from callbacks.pruning import finetune_sparsity_callbacks
from core.assets import is_local_path, resolve_path
from datamodules.classification import ClassificationDataModule
from datamodules.glue import GLUE_TASKS
from datamodules.squad import QATaskConfig, SquadDataModule
from datamodules.task_config import TaskDataConfig
from modules.finetuning import FinetuneModule, metric_names
from modules.kd_logits import MEMO
from modules.losses import KDSettings
from modules.qa import QAModule
from modules.qa import write_predictions as write_qa_predictions
from modules.student import StudentForQuestionAnswering, StudentForSequenceClassification
from modules.teacher import check_positions
from recipes import common
from recipes.common import build_logger, build_trainer, write_metrics
from recipes.config import RunConfig
from recipes.schemas import FinetuneConfig, TaskKDConfig  # noqa: F401  (public here too)
from recipes.shipping import save_for_serving, write_run_card
from recipes.task_kd import (  # noqa: F401  (public here too)
    build_intermediate,
    check_kd_teacher,
    check_task_distillation,
    load_kd_teacher,
    require_head,
    truncate,
)
from recipes.tracking import tracked
from reports.predictions import write_predictions

log = logging.getLogger(__name__)


def model_path(cfg: RunConfig) -> str:
    """The model to fine-tune, as transformers wants it: a local path or a hub id.

    Raises:
        FileNotFoundError: a local path that does not exist.
    """
    name = cfg.teacher.name_or_path if cfg.recipe.model == "teacher" else cfg.recipe.model
    if is_local_path(name) or name.startswith((".", "/", "~")):
        path = resolve_path(name)
        if not path.exists():
            raise FileNotFoundError(f"recipe.model={cfg.recipe.model!r} -> {path} does not exist")
        return str(path)
    return name


@dataclass
class TaskSetup:
    """What ``run`` trains: the task's data, the model with its head, and the LightningModule around it."""

    data: L.LightningDataModule
    model: torch.nn.Module
    module: L.LightningModule
    train_examples: int  # rows (classification) or questions (QA)


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Fine-tune ``recipe.model`` on ``cfg.task`` (``cfg.recipe``: a FinetuneConfig); steps: module docstring.

    Returns:
        metrics.json's flat dict: best dev ``val/*``, ``test/*`` where labelled, params, steps, latency.
    Raises:
        ValueError / FileNotFoundError: see ``preflight`` and ``model_path``; trainer.max_steps set.
    """
    recipe: FinetuneConfig = cfg.recipe
    if cfg.trainer.max_steps != -1:
        raise ValueError("trainer.max_steps is set by the recipe; use recipe.max_steps / recipe.epochs")
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # Model + its tokenizer; the task decides the head (span head for QA, a classifier with the task's labels).
    path = model_path(cfg)
    qa = isinstance(cfg.task, QATaskConfig)
    preflight(cfg, path, qa)
    tokenizer = AutoTokenizer.from_pretrained(path)
    task = setup_qa(cfg, path, tokenizer) if qa else setup_classification(cfg, path, tokenizer)
    data, model, module = task.data, task.model, task.module
    log.info("fine-tuning %s (%.2fM params) on %s: %s", path, model.num_parameters() / 1e6, cfg.task.name,
             data.split_sizes)  # fmt: skip

    model_dir = run_dir / "model"
    if not qa and data.id2label:  # the saved classifier names its classes as the task does, not LABEL_<id>
        model.config.id2label, model.config.label2id = data.id2label, data.label2id

    def save_best(best: dict[str, float]) -> None:  # the best-dev model, in HF format
        if recipe.save_model and trainer.is_global_zero:
            save_for_serving(model, tokenizer, model_dir)  # stock BERT, or the code beside the weights

    module.on_best = save_best
    checkpoints = run_dir / "checkpoints"  # last.ckpt with the best-dev state: a killed / requeued run resumes
    callbacks = [common.epoch_checkpoints(checkpoints)] + ([StepProgressBar()] if cfg.trainer.enable_progress_bar else [])
    callbacks += finetune_sparsity_callbacks(recipe.sparsity, model)  # a pruned model's mask stays fixed; NIP (issue 19)
    trainer = build_trainer(
        cfg.trainer, str(run_dir), build_logger(cfg, str(run_dir)), callbacks,
        max_steps=recipe.max_steps or -1, max_epochs=recipe.epochs if recipe.max_steps is None else None,
        enable_checkpointing=True,
    )  # fmt: skip
    rows_before = (MEMO.misses, MEMO.hits)
    trainer.fit(module, datamodule=data, ckpt_path=common.resume_from(checkpoints))
    # A step budget that ends mid-epoch: judge the final model too.
    if module.validated_at != trainer.global_step:
        trainer.validate(module, datamodule=data, verbose=False)

    metrics: dict[str, float] = dict(module.best)
    metrics.update({"params": float(model.num_parameters()), "steps": float(trainer.global_step),
                    "train_examples": float(task.train_examples)})  # fmt: skip
    if getattr(data, "unlabelled", None) is not None:  # PD's transfer rows (KD only) beside the labelled ones
        metrics["transfer_examples"] = float(len(data.unlabelled))
    memo = getattr(module, "intermediate", None) is None  # with intermediate terms the teacher runs every step
    if getattr(module, "_teacher", None) and module.kd.gamma > 0 and memo:  # task KD's teacher rows, encoded / reused
        metrics.update({"task_kd/gamma": module.kd.gamma, "task_kd/rows_encoded": float(MEMO.misses - rows_before[0]),
                        "task_kd/rows_reused": float(MEMO.hits - rows_before[1])})  # fmt: skip
    # How many rows each score was measured on: the report's noise floor of a score needs it (reports/targets.py).
    metrics.update({f"{split}_examples": float(n) for split, n in data.split_sizes.items() if split != "train"})
    if qa:  # SQuAD's test set is hidden: the best-dev answers, for the official evaluation script
        if trainer.is_global_zero:
            write_qa_predictions(
                run_dir / "predictions" / f"{cfg.task.name}_dev.json", module.best_predictions
            )
    elif "test" in data.split_sizes and recipe.save_model and model_dir.exists():
        metrics.update(evaluate_test_split(trainer, module, data, cfg))
    if trainer.is_global_zero and recipe.measure_latency:
        metrics.update(measure_latency(model, cfg.latency).as_metrics())
    metrics["wall_time_s"] = time.perf_counter() - started
    log.info("best dev: %s", {k: round(v, 4) for k, v in module.best.items()})
    if not trainer.is_global_zero:
        return metrics
    if recipe.save_model and model_dir.exists():
        write_run_card(model_dir, cfg, metrics, "finetune")
    metrics["run_dir_mb"] = common.finish_run(run_dir, [checkpoints], cfg.keep_checkpoints)
    return write_metrics(run_dir, metrics)


def preflight(cfg: RunConfig, path: str, qa: bool) -> None:
    """What would otherwise fail after the data is tokenised or the model trained: sequence lengths the model
    cannot embed, a task-KD teacher that is missing or has no head for the task, QA's partial validation.

    Raises:
        ValueError: lengths the model cannot embed, a teacher without the task's head, partial QA validation.
        FileNotFoundError: ``recipe.task_kd.teacher`` holds no saved model.
    """
    recipe: FinetuneConfig = cfg.recipe
    model_config = AutoConfig.from_pretrained(path)
    positions = getattr(model_config, "max_position_embeddings", None)
    check_positions(path, model_config, {"task.max_seq_len": cfg.task.max_seq_len})
    if positions is not None and recipe.measure_latency and cfg.latency.seq_len > positions:
        raise ValueError(
            f"latency.seq_len={cfg.latency.seq_len} exceeds {path}'s max_position_embeddings={positions}; "
            "lower latency.seq_len or set recipe.measure_latency=false"
        )
    if recipe.task_kd.teacher:
        teacher = resolve_path(recipe.task_kd.teacher)
        if not (teacher / "config.json").exists():
            raise FileNotFoundError(
                f"recipe.task_kd.teacher={recipe.task_kd.teacher!r} -> {teacher} is not a saved model (no "
                "config.json); give a recipe=finetune run's <run dir>/model"
            )
        require_head(teacher, "ForQuestionAnswering" if qa else "ForSequenceClassification",
                     "recipe.task_kd.teacher", cfg.task.name)  # fmt: skip
        check_kd_teacher(cfg, path, teacher)
    check_task_distillation(cfg, path, qa)  # recipe.init, recipe.task_kd.intermediate / .transfer
    if qa and cfg.trainer.limit_val_batches not in (None, 1, 1.0):
        raise ValueError(
            "trainer.limit_val_batches: SQuAD scores every question of the dev set (a partial pass would score "
            "the rest as unanswered); leave it null"
        )


def setup_classification(cfg: RunConfig, path: str, tokenizer: PreTrainedTokenizerBase) -> TaskSetup:
    """Classification data, the model with a classifier head of the task's labels, its FinetuneModule.

    Raises:
        ValueError: a task-KD teacher with another label count than the task's.
    """
    recipe: FinetuneConfig = cfg.recipe
    data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    if recipe.task_kd.transfer.enabled:  # PD's unlabelled transfer text joins the training batches (KD only)
        dropped = data.add_transfer(recipe.task_kd.transfer)
        log.info("transfer rows: %d (%d dropped: the task has them)", len(data.unlabelled), dropped)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=data.num_labels)
    model = truncate(cfg, path, model, StudentForSequenceClassification)  # recipe.init (PKD: the first k layers)
    teacher = load_kd_teacher(cfg, AutoModelForSequenceClassification, tokenizer)
    if teacher is not None and teacher.config.num_labels != data.num_labels:
        raise ValueError(
            f"recipe.task_kd.teacher has {teacher.config.num_labels} labels but task {cfg.task.name} has "
            f"{data.num_labels}: give a teacher fine-tuned on this task (recipe=finetune on its model first)"
        )
    val_names = tuple(
        "val" if n == "validation" else n.replace("validation", "val") for n in data.validation_splits
    )
    module = FinetuneModule(
        model=model,
        num_labels=data.num_labels,
        metrics=metric_names(cfg.task.glue_task if cfg.task.source == "glue" else None, data.num_labels),
        optimizer=instantiate(recipe.optimizer),
        warmup_fraction=recipe.warmup_fraction,
        val_names=val_names,
        kd_teacher=teacher,
        kd=KDSettings(gamma=recipe.task_kd.gamma if teacher is not None else 0.0,
                      temperature=recipe.task_kd.temperature),
        seed=cfg.seed,
        intermediate=build_intermediate(cfg, model, teacher),  # PKD / TinyBERT's terms and their projections
    )
    return TaskSetup(data, model, module, data.split_sizes["train"])


def setup_qa(cfg: RunConfig, path: str, tokenizer: PreTrainedTokenizerBase) -> TaskSetup:
    """SQuAD-style data (windows over long contexts), the model with a span head, its QAModule."""
    recipe: FinetuneConfig = cfg.recipe
    data = SquadDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    model = truncate(cfg, path, AutoModelForQuestionAnswering.from_pretrained(path), StudentForQuestionAnswering)
    teacher = load_kd_teacher(cfg, AutoModelForQuestionAnswering, tokenizer)
    module = QAModule(
        model=model,
        examples=data.examples["validation"],
        optimizer=instantiate(recipe.optimizer),
        max_answer_len=cfg.task.max_answer_len,
        warmup_fraction=recipe.warmup_fraction,
        kd_teacher=teacher,
        kd=KDSettings(gamma=recipe.task_kd.gamma if teacher is not None else 0.0,
                      temperature=recipe.task_kd.temperature),
        seed=cfg.seed,
    )
    return TaskSetup(data, model, module, len(data.examples["train"]))


def submission_files(task: TaskDataConfig, test_splits: list[str]) -> dict[str, str]:
    """Test split -> prediction file name: GLUE's (``CoLA.tsv``, ``MNLI-mm.tsv``) or ``<task.name>.tsv``.

    GLUE's leaderboard reads 0/1 for CoLA, SST-2, MRPC, QQP and WNLI, label names for MNLI, QNLI and RTE, and
    floats for STS-B (datamodules.glue.GLUE_TASKS); local tasks write their own label names.
    """
    if task.source == "glue":
        files = GLUE_TASKS[str(task.glue_task)].submission_files
        return {split: f"{files[split]}.tsv" for split in test_splits if split in files}
    return {
        split: f"{task.name}.tsv" if split == "test" else f"{task.name}_{split}.tsv" for split in test_splits
    }


def evaluate_test_split(
    trainer: L.Trainer, module: FinetuneModule, data: ClassificationDataModule, cfg: RunConfig
) -> dict[str, float]:
    """The best-dev model (``<run dir>/model``) on the test split(s): metrics where the test split has gold
    labels, and predictions in the submission format under ``<run dir>/predictions`` (GLUE's test labels
    are hidden).

    Returns:
        ``test/*`` metrics, or nothing when the test split is unlabelled.
    """
    task: TaskDataConfig = cfg.task
    predictions_dir = Path(cfg.run_dir) / "predictions"
    module.model = AutoModelForSequenceClassification.from_pretrained(Path(cfg.run_dir) / "model")
    metrics = {}
    if data.test_labelled:
        trainer.test(module, datamodule=data, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    glue = task.source == "glue"
    as_names = GLUE_TASKS[str(task.glue_task)].labels_as_names if glue else True
    for split, name in submission_files(task, data.test_splits).items():
        outputs = gather_outputs(trainer, trainer.predict(module, dataloaders=data.eval_dataloader(split)))
        if trainer.is_global_zero:
            write_predictions(predictions_dir / name, outputs, data.label_names if as_names else [],
                              data.source_rows[split], glue=glue)  # fmt: skip
    return metrics


def gather_outputs(
    trainer: L.Trainer, outputs: list[dict[str, torch.Tensor]]
) -> list[dict[str, torch.Tensor]]:
    """Every rank's predictions (under DDP each rank predicts its own shard of the split)."""
    if trainer.world_size == 1:
        return outputs
    shards: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(shards, [{k: v.cpu() for k, v in o.items()} for o in outputs])
    return [o for shard in shards for o in shard]
