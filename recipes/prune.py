"""Recipe `prune`: prune a BERT encoder on the corpus while it distils from its unpruned self (issue 19).

    python run.py recipe=prune                                            # magnitude, 50%, the MiniLM teacher
    python run.py recipe=prune recipe.sparsity=0.8 recipe.schedule.end_fraction=0.7
    python run.py recipe=prune recipe.method=rpp recipe.rpp.lam=0.5       # reweighted proximal pruning
    python run.py recipe=prune recipe.method=structured recipe.structured.heads=0.5 recipe.structured.ffn=0.5
    python run.py recipe=finetune recipe.model=<run dir>/student          # then fine-tune: the mask stays fixed

Reads top to bottom: teacher (frozen: the unpruned reference) -> corpus batches (MLM + NSP layout; only the inputs
are read) -> the model to prune (a copy of the teacher's encoder, or ``recipe.model``), its dense p50 -> structured:
heads and FFN neurons ranked by magnitude and removed (a smaller ``PrunedBertModel``) -> LightningModule (every
layer matches the teacher's: modules/pruning_distill.py) -> pruning callbacks (magnitude: Zhu & Gupta's cubic
schedule; rpp: the proximal step) -> Trainer (resumes from checkpoints/last.ckpt) -> sparse-aware sizes, dense p50
after -> ``<run dir>/student`` (zeros baked into the weights; config.json records ``pruning``) -> metrics.json.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoConfig, AutoModel, PreTrainedModel

import modules.auto  # noqa: F401  (registers the pruned-BERT classes: a structured model loads through AutoModel)
from callbacks.latency import measure_latency
from callbacks.progress import StepProgressBar
from callbacks.pruning import GradualMagnitudePruning, ProximalPruning
from core.assets import resolve_path
from datamodules.pretraining import PretrainingDataModule
from modules.portable import save_for_serving
from modules.pruning import head_scores, keep_top, neuron_scores, sparsity_counts, structured_prune
from modules.pruning_distill import PruningDistillModule
from modules.teacher import Teacher, check_positions, load_teacher, read_teacher_config
from recipes.common import build_logger, build_trainer, finish_run, resume_from, write_metrics
from recipes.config import RunConfig
from recipes.prune_config import PruneConfig
from recipes.tracking import tracked

log = logging.getLogger(__name__)

BERT_FAMILY = ("bert", "pruned_bert")  # what the surgery and the layer-by-layer loss read (encoder.layer.<i>)


def check_compatible(cfg: RunConfig) -> None:
    """Before any work: fields this recipe owns, a model of the BERT family, lengths the models can embed.

    Raises:
        ValueError / FileNotFoundError: naming the field and the fix.
    """
    recipe: PruneConfig = cfg.recipe
    for name, unset in {"max_steps": -1, "val_check_interval": None}.items():
        if getattr(cfg.trainer, name) != unset:
            raise ValueError(f"trainer.{name} is set by recipe=prune (recipe.regular_steps, recipe.val_every_n_steps);"
                             f" leave trainer.{name} at {unset}")  # fmt: skip
    teacher_config = read_teacher_config(cfg.teacher)
    check_positions(f"teacher {cfg.teacher.name_or_path}", teacher_config, {"data.max_seq_len": cfg.data.max_seq_len})
    config = teacher_config if recipe.model == "teacher" else AutoConfig.from_pretrained(_model_dir(recipe.model))
    if config.model_type not in BERT_FAMILY:
        raise ValueError(f"recipe.model={recipe.model!r} is a {config.model_type!r} model: recipe=prune prunes "
                         f"BERT-family encoders ({BERT_FAMILY}); give the teacher or a stock-BERT dir")  # fmt: skip
    if (config.num_hidden_layers, config.hidden_size) != (teacher_config.num_hidden_layers, teacher_config.hidden_size):
        raise ValueError(f"recipe.model={recipe.model!r} has {config.num_hidden_layers} layers x {config.hidden_size} "
                         "but the teacher it distils from layer by layer has "
                         f"{teacher_config.num_hidden_layers} x {teacher_config.hidden_size}: prune a model of the "
                         "teacher's shape (or set teacher= to its unpruned original)")  # fmt: skip
    if recipe.measure_latency and cfg.latency.seq_len > config.max_position_embeddings:
        raise ValueError(f"latency.seq_len={cfg.latency.seq_len} exceeds the model's max_position_embeddings="
                         f"{config.max_position_embeddings}; lower it or set recipe.measure_latency=false")  # fmt: skip


def _model_dir(model: str) -> str:
    path = resolve_path(model)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"recipe.model={model!r} -> {path} holds no saved model (no config.json)")
    return str(path)


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Prune ``recipe.model`` with ``recipe.method`` for ``recipe.regular_steps`` steps (module docstring).

    Long on purpose: the recipe top to bottom (STYLE.md 1).
    Returns:
        metrics.json's dict: ``val/{loss,mha,fm}``, ``params``, ``params_nonzero``, ``sparsity`` (zero fraction of
        the encoder's linear weights), ``*_before`` of the unpruned model, ``latency/p50_ms`` (dense, after) and
        ``latency_before/p50_ms``, ``steps``, ``wall_time_s``.
    """
    recipe: PruneConfig = cfg.recipe
    check_compatible(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # The unpruned teacher (frozen) and the corpus: only the inputs of its batches are read.
    teacher = load_teacher(cfg.teacher)
    data = PretrainingDataModule(cfg.data, teacher.tokenizer)

    # The model to prune, and what it costs before.
    student = model_to_prune(recipe, teacher)
    metrics = {f"{k}_before": v for k, v in sparsity_counts(student).items()}
    if recipe.measure_latency:
        metrics["latency_before/p50_ms"] = measure_latency(student, cfg.latency).p50_ms
    if recipe.method == "structured":  # remove heads and FFN neurons now; the run recovers from it
        heads = keep_top(head_scores(student), recipe.structured.heads)
        neurons = keep_top(neuron_scores(student), recipe.structured.ffn)
        student = structured_prune(student, heads, neurons)
        student.set_attn_implementation("eager")  # the layer-wise loss reads attention maps
        log.info("structured: heads per layer %s, FFN widths %s", student.config.layer_heads,
                 student.config.layer_intermediate)  # fmt: skip

    # Callbacks (the pruning schedule, a resumable last.ckpt, progress) and the Trainer.
    callbacks = [*pruning_callbacks(recipe, student),
                 ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=recipe.checkpoint_every_n_steps)]  # fmt: skip
    if cfg.trainer.enable_progress_bar:
        callbacks.append(StepProgressBar())
    trainer = build_trainer(
        cfg.trainer, str(run_dir), build_logger(cfg, str(run_dir)), callbacks, max_steps=recipe.regular_steps,
        val_check_interval=recipe.val_every_n_steps or None,
        check_val_every_n_epoch=None if recipe.val_every_n_steps else cfg.trainer.check_val_every_n_epoch,
        use_distributed_sampler=False,  # the data module shards each step's batch by rank itself
    )  # fmt: skip
    module = PruningDistillModule(
        student=student, teacher=teacher, optimizer=instantiate(recipe.optimizer), total_steps=recipe.regular_steps,
        warmup_fraction=recipe.warmup_fraction, attention_weight=recipe.attention, feature_weight=recipe.feature,
        seed=cfg.seed,
    )  # fmt: skip
    checkpoints = run_dir / "checkpoints"
    trainer.fit(module, datamodule=data, ckpt_path=resume_from(checkpoints) if recipe.resume else None)
    trainer.validate(module, datamodule=data, verbose=False)

    # Results: sparse-aware sizes, dense latency as served, the pruned model with its zeros baked in.
    student.eval()
    counts = sparsity_counts(student)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    metrics.update({**counts, "steps": float(trainer.global_step), "wall_time_s": time.perf_counter() - started})
    if not trainer.is_global_zero:
        return metrics
    if recipe.measure_latency:
        metrics.update(measure_latency(student, cfg.latency).as_metrics())
    if recipe.save_student:
        student.config.pruning = {"method": recipe.method, "sparsity": round(counts["sparsity"], 4),
                                  "params_nonzero": int(counts["params_nonzero"])}  # fmt: skip
        save_for_serving(student, teacher.tokenizer, run_dir / "student")
    metrics["run_dir_mb"] = finish_run(run_dir, [checkpoints], cfg.keep_checkpoints)
    log.info("pruned (%s): sparsity %.3f, %.2fM of %.2fM params non-zero", recipe.method, counts["sparsity"],
             counts["params_nonzero"] / 1e6, counts["params"] / 1e6)  # fmt: skip
    return write_metrics(run_dir, metrics)


def model_to_prune(recipe: PruneConfig, teacher: Teacher) -> PreTrainedModel:
    """A trainable copy of the teacher's encoder (``recipe.model=teacher``), or the saved encoder ``recipe.model``,
    with eager attention (its maps are distilled)."""
    if recipe.model == "teacher":
        model = copy.deepcopy(teacher.encoder)
    else:
        model = AutoModel.from_pretrained(_model_dir(recipe.model), attn_implementation="eager")
    return model.requires_grad_(True).train()


def pruning_callbacks(recipe: PruneConfig, model: PreTrainedModel) -> list[L.Callback]:
    """magnitude: gradual global magnitude pruning to ``recipe.sparsity``; rpp: the proximal step; structured:
    nothing (the surgery is done; recovery trains the smaller dense model)."""
    if recipe.method == "magnitude":
        return [GradualMagnitudePruning(model, recipe.sparsity, recipe.schedule)]
    if recipe.method == "rpp":
        return [ProximalPruning(model, recipe.rpp)]
    return []
