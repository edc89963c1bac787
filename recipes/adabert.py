"""Recipe `adabert`: task-adaptive differentiable search of a small CNN student (AdaBERT, IJCAI 2020).

    python run.py recipe=adabert                                  # offline sentiment task, the MiniLM teacher
    python run.py recipe=adabert recipe.teacher=<finetune run dir>/model   # reuse a fine-tuned teacher
    python run.py -m recipe=adabert recipe.beta=0,4,8 recipe.teacher=<dir>  # the trade-off: adabert_table.md
    python run.py recipe=adabert task=glue task.glue_task=mrpc    # GLUE, with the network

Reads top to bottom:
1. the teacher, fine-tuned on the task (``recipe.teacher``, or fine-tuned here first by recipe=finetune);
2. its knowledge as fixed targets: its logits on every training row, and a probe (a linear classifier on
   frozen [CLS] states) per layer with its logits: cached, so a sweep over β pays for them once;
3. the search: a super-network of K_max cells sharing one architecture; each step samples the ops and K
   (hard Gumbel-softmax, straight-through), L = (1-γ)·CE + γ·KD + β·L_E; weights by SGD, logits by Adam
   (frozen for the first ``arch_warmup_epochs``);
4. derive the argmax child (K and one op per edge) and retrain it (inheriting the searched weights) with
   the same loss minus L_E; the best-dev child is saved in HF format (``student/``) with the task's label
   names. Every evaluated child, in the search too, first has its BatchNorm statistics recomputed on
   training batches (``recalibrate_batchnorm``): the saved child scores what was reported;
5. evaluate: dev and test metrics, params, FLOPs, measured latency of child and teacher, speed-up; ``report.md``
   with the derived cell as text and a picture, probe accuracies, the search trajectory (reports/adabert.py);
   the child's model card. Step 2's code: modules/adabert_knowledge.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import modules.auto  # noqa: F401  (registers the students with the Auto classes)
from callbacks.latency import measure_latency
from callbacks.progress import StepProgressBar
from core.assets import resolve_path
from datamodules.classification import ClassificationDataModule
from datamodules.task_config import TaskDataConfig
from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification
from modules.adabert_child import (
    child_config,
    child_flops,
    child_params,
    embedding_params,
    factorise_embeddings,
    inherit_weights,
)
from modules.adabert_knowledge import KnowledgeCache, TeacherKnowledge, teacher_knowledge
from modules.adabert_ops import DerivedArchitecture
from modules.adabert_training import (
    AdaBertModule,
    ArchOptimizer,
    TauSchedule,
    TeacherTargets,
    WeightOptimizer,
)
from modules.finetuning import metric_names
from modules.losses import KDSettings
from modules.teacher import check_positions, check_vocabulary, teacher_path
from recipes import finetune
from recipes.common import build_logger, build_trainer, finish_run, write_metrics
from recipes.config import RunConfig
from recipes.schemas import AdaBertRecipeConfig  # noqa: F401  (public here too)
from recipes.schemas import AdaBertTeacherFinetuneConfig as TeacherFinetuneConfig  # noqa: F401
from recipes.shipping import save_for_serving, write_run_card
from recipes.tracking import tracked
from reports.adabert import AdaBertReport, AdaBertSettings, write_report

log = logging.getLogger(__name__)


def check_config(cfg: RunConfig) -> None:
    """What this recipe cannot do, said before any work.

    Raises:
        ValueError: a squad or regression task, or trainer settings the recipe owns or cannot honour.
    """
    if not isinstance(cfg.task, TaskDataConfig):
        raise ValueError(
            "task: AdaBERT searches sentence (pair) classifiers; pick a classification task, not squad"
        )
    if cfg.task.num_labels < 2:
        raise ValueError(
            f"task.num_labels={cfg.task.num_labels}: AdaBERT's CE/KD losses need classes, not regression"
        )
    t = cfg.trainer
    if t.gradient_clip_val or t.accumulate_grad_batches != 1:
        raise ValueError(
            "trainer.gradient_clip_val / trainer.accumulate_grad_batches: the search steps two optimizers by hand "
            "(Lightning's manual optimization), which supports neither; leave them at null / 1 (clip with "
            "recipe.grad_clip)"
        )
    if t.max_steps != -1:
        raise ValueError(
            "trainer.max_steps is set by the recipe; use recipe.search_epochs / recipe.retrain_epochs"
        )
    # The teacher reads the task's ids (and latency.seq_len's, measured beside the child): from config.json.
    path = str(resolve_path(cfg.recipe.teacher)) if cfg.recipe.teacher else teacher_path(cfg.teacher)
    if (Path(path) / "config.json").exists() or not cfg.recipe.teacher:  # else teacher_checkpoint says how to fix
        lengths = {"task.max_seq_len": cfg.task.max_seq_len, **({"latency.seq_len": cfg.latency.seq_len} if cfg.recipe.measure_latency else {})}  # fmt: skip
        check_positions(f"the teacher ({path})", AutoConfig.from_pretrained(path), lengths)


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Search, derive, retrain and evaluate an AdaBERT student for ``cfg.task`` (steps 1-5 above).

    Returns:
        metrics.json's flat dict (``search/*``, the child's ``val/*``, ``test/*``, ``teacher/*``, sizes, ...).
    Raises:
        ValueError: see ``check_config``; a teacher with another label count than the task's.
        FileNotFoundError: ``recipe.teacher`` is not a saved model.
    """
    recipe: AdaBertRecipeConfig = cfg.recipe
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # 1. The fine-tuned teacher.
    teacher_dir = teacher_checkpoint(cfg, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    check_vocabulary(f"the teacher ({teacher_dir})", AutoConfig.from_pretrained(teacher_dir), tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    if teacher.config.num_labels != data.num_labels:
        raise ValueError(
            f"recipe.teacher has {teacher.config.num_labels} labels but task {cfg.task.name} has {data.num_labels}: "
            "give a teacher fine-tuned on this task"
        )

    # 2. Its knowledge: logits and layer probes on every training row (cached).
    cache = KnowledgeCache(cache_dir=recipe.cache_dir, probe_epochs=recipe.probe_epochs)
    knowledge = teacher_knowledge(teacher, teacher_dir, data, cache, progress=cfg.trainer.enable_progress_bar)
    log.info("teacher dev %s; probe dev accuracy per layer: %s", knowledge.teacher_dev,
             [round(a, 3) for a in knowledge.probe_dev_acc])  # fmt: skip

    # 3. Search.
    metrics_names = metric_names(cfg.task.glue_task if cfg.task.source == "glue" else None, data.num_labels)
    inputs = StageInputs(data, knowledge.targets, metrics_names)
    search_cfg = AdaBertConfig(
        vocab_size=teacher.config.vocab_size, embedding_size=recipe.embedding_size, hidden_size=recipe.hidden_size,
        max_cells=recipe.max_cells, num_nodes=recipe.num_nodes, num_labels=data.num_labels,
        pair=len(cfg.task.text_columns) == 2, max_length=cfg.task.max_seq_len,
        pad_token_id=tokenizer.pad_token_id, id2label=data.id2label, label2id=data.label2id,
    )  # fmt: skip
    supernet = AdaBertForSequenceClassification(search_cfg)
    factorise_embeddings(supernet, teacher)
    search_plan = StagePlan(run_dir / "search", recipe.search_epochs, beta=recipe.beta)
    search = train_stage(cfg, supernet, inputs, search_plan)
    arch = supernet.derive()
    log.info("derived child:\n%s", arch.describe(recipe.num_nodes))

    # 4. Retrain the child.
    child = AdaBertForSequenceClassification(child_config(search_cfg, arch))
    if recipe.inherit_weights:
        inherit_weights(child, supernet)
    else:
        factorise_embeddings(child, teacher)
    student_dir = run_dir / "student"

    def save_child(best: dict[str, float]) -> None:  # with adabert.py's code beside the weights
        save_for_serving(child, tokenizer, student_dir)

    retrain_plan = StagePlan(run_dir / "retrain", recipe.retrain_epochs, beta=0.0, on_best=save_child)
    retrain = train_stage(cfg, child, inputs, retrain_plan)

    # 5. Evaluate the best-dev child beside the teacher; the report.
    best = AdaBertForSequenceClassification.from_pretrained(student_dir).eval()
    metrics: dict[str, float] = {f"search/{k}": v for k, v in search.module.best.items()}
    metrics.update(retrain.module.best)
    metrics.update(evaluate_test_split(retrain, best, data, knowledge))
    metrics.update({f"teacher/{k}": v for k, v in knowledge.teacher_dev.items()})
    if not retrain.trainer.is_global_zero:  # under DDP one rank measures and reports
        return metrics
    metrics.update(size_and_speed(cfg, best, teacher, arch))
    metrics.update({f"probe/layer_{i}_dev_acc": acc for i, acc in enumerate(knowledge.probe_dev_acc, start=1)})
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["run_dir_mb"] = finish_run(run_dir, [run_dir / s / "checkpoints" for s in ("search", "retrain")], cfg.keep_checkpoints)
    write_report(run_dir, AdaBertReport(AdaBertSettings.from_run(cfg), arch, metrics, knowledge.probe_dev_acc,
                                        search.module.history))  # fmt: skip
    write_run_card(student_dir, cfg, metrics, "adabert")
    return write_metrics(run_dir, metrics)


# ------------------------------------------------------------------------------------------- the teacher


def teacher_checkpoint(cfg: RunConfig, run_dir: Path) -> str:
    """``recipe.teacher``, or the teacher group's model fine-tuned on the task now (into <run dir>/teacher).

    Returns:
        The teacher's model dir.

    Raises:
        FileNotFoundError: ``recipe.teacher`` holds no saved model.
        ValueError: ``recipe.teacher`` was not fine-tuned with a sequence-classification head.
    """
    recipe: AdaBertRecipeConfig = cfg.recipe
    if recipe.teacher:
        path = resolve_path(recipe.teacher)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"recipe.teacher={recipe.teacher!r}: {path} is not a saved model (no config.json); give a "
                "recipe=finetune run's <run dir>/model"
            )
        finetune.require_head(path, "ForSequenceClassification", "recipe.teacher", cfg.task.name)
        return str(path)
    done = run_dir / "teacher" / "model"
    if (done / "config.json").exists() and (run_dir / "teacher" / "metrics.json").exists():
        log.info("reusing the teacher fine-tuned by an earlier attempt of this run: %s", done)
        return str(done)
    log.info("fine-tuning the teacher %s on %s first (recipe.teacher_finetune)", cfg.teacher.name_or_path,
             cfg.task.name)  # fmt: skip
    quiet = dataclasses.replace(cfg.trainer, enable_model_summary=False)
    ft = dataclasses.replace(recipe.teacher_finetune, model="teacher", save_model=True)
    finetune.run(dataclasses.replace(cfg, recipe=ft, trainer=quiet, run_dir=str(run_dir / "teacher")))
    return str(done)


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class StageInputs:
    """What the search and the retraining both train on."""

    data: ClassificationDataModule
    targets: TeacherTargets  # the teacher's logits and probe logits per training row
    metrics_names: tuple[str, ...]  # the task's dev metrics


@dataclass(frozen=True)
class StagePlan:
    """One stage: where it writes (checkpoints, logs), how long, the efficiency weight, a best-dev hook."""

    stage_dir: Path
    epochs: int
    beta: float  # 0 when retraining: the child's architecture is fixed
    on_best: Callable[[dict[str, float]], None] | None = None


@dataclass
class Stage:
    """A trained stage: its module (best metrics, history) and the Trainer that trained it."""

    module: AdaBertModule
    trainer: L.Trainer


def train_stage(
    cfg: RunConfig, model: AdaBertForSequenceClassification, inputs: StageInputs, plan: StagePlan
) -> Stage:
    """Search (a super-network) or retrain (a child) for ``plan.epochs``; resumes from the stage dir's last.ckpt."""
    recipe: AdaBertRecipeConfig = cfg.recipe
    module = AdaBertModule(
        model, inputs.targets, inputs.metrics_names,
        kd=KDSettings(gamma=recipe.gamma, temperature=recipe.temperature),
        beta=plan.beta, tau=TauSchedule(start=recipe.tau_start, end=recipe.tau_end),
        weight_optimizer=WeightOptimizer(lr_start=recipe.lr, lr_end=recipe.lr_min, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip),
        arch_optimizer=ArchOptimizer(lr=recipe.arch_lr, weight_decay=recipe.arch_weight_decay,
                                     warmup_epochs=recipe.arch_warmup_epochs),
        seed=cfg.seed, on_best=plan.on_best, calibration_batches=recipe.calibration_batches,
    )  # fmt: skip
    # Every epoch: the newest checkpoint (top-1 without a monitor), last.ckpt linked to it. With save_top_k=0
    # Lightning writes last.ckpt only at the end of fit, and a crash would lose the whole stage.
    stage_dir = plan.stage_dir
    checkpoints = ModelCheckpoint(
        dirpath=stage_dir / "checkpoints", save_top_k=1, save_last="link", every_n_epochs=1
    )
    callbacks = [checkpoints] + ([StepProgressBar()] if cfg.trainer.enable_progress_bar else [])
    trainer = build_trainer(cfg.trainer, str(stage_dir), build_logger(cfg, str(stage_dir)), callbacks,
                            max_epochs=plan.epochs, enable_checkpointing=True)  # fmt: skip
    last = stage_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=inputs.data, ckpt_path=str(last) if last.exists() else None)
    return Stage(module, trainer)


# ------------------------------------------------------------------------------------------- evaluation


def evaluate_test_split(
    retrain: Stage,
    best: AdaBertForSequenceClassification,
    data: ClassificationDataModule,
    knowledge: TeacherKnowledge,
) -> dict[str, float]:
    """The best-dev child's and the teacher's ``test/*`` where the test split has labels; else nothing."""
    if not ("test" in data.split_sizes and data.test_labelled):
        return {}
    retrain.module.model = best
    retrain.trainer.test(retrain.module, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in retrain.trainer.callback_metrics.items() if k.startswith("test/")}
    metrics.update({f"teacher/{k}": v for k, v in knowledge.teacher_test.items()})
    return metrics


def size_and_speed(
    cfg: RunConfig, best: AdaBertForSequenceClassification, teacher: torch.nn.Module, arch: DerivedArchitecture
) -> dict[str, float]:
    """K, params (with and without embeddings), FLOPs and compression of the child against the teacher; with
    ``recipe.measure_latency`` both measured on ``latency.device`` and the speed-up."""
    teacher_params = teacher.num_parameters()
    metrics = {
        "num_cells": float(arch.num_cells), "params": float(child_params(best.config)),
        # without the (factorised) embedding tables: what the search itself sized
        "params_non_embedding": float(child_params(best.config, include_embeddings=False)),
        "teacher/params_non_embedding": float(teacher_params - embedding_params(teacher)),
        "flops_per_seq@128": float(child_flops(best.config, 128)), "teacher/params": float(teacher_params),
        "compression": teacher_params / child_params(best.config),
    }  # fmt: skip
    if cfg.recipe.measure_latency:
        student_latency = measure_latency(best, cfg.latency)
        teacher_latency = measure_latency(teacher, cfg.latency)
        metrics.update(student_latency.as_metrics())
        metrics.update({f"teacher/{k}": v for k, v in teacher_latency.as_metrics().items()})
        if not (student_latency.contended or teacher_latency.contended):  # a loaded CPU's ratio means nothing
            metrics["speedup"] = teacher_latency.p50_ms / student_latency.p50_ms
    return metrics
