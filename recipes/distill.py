"""Recipes `flash_distill` and `regular_distill`: the same code, two step budgets (AutoDistill §3.3).

    python run.py recipe=flash_distill                 # 5% of the regular budget: rank candidates
    python run.py recipe=regular_distill               # the full budget: train the winners
    python run.py recipe=flash_distill experiment=autodistill_paper   # 24 blocks, 37k steps, on GPUs
    python run.py experiment=distilbert          # the survey's pre-training mixes: also tinybert_general, pd_pretrain

Reads top to bottom: teacher -> data -> student (embeddings from the teacher, or the teacher's own layers with
``recipe.init``) -> layer map and schedule (K block
stages, then pre-training distillation) -> LightningModule with the loss mix -> callbacks -> Trainer (resumes from
checkpoints/last.ckpt) -> metrics.json + the student in HF format (loads anywhere: modules/portable.py), its card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console
from rich.table import Table

from callbacks.latency import measure_latency
from callbacks.progress import StepProgressBar
from callbacks.progressive import ProgressiveTransfer
from datamodules.pretraining import PretrainingDataModule
from modules.distillation import DistillationModule
from modules.embedding_init import init_embeddings_from_teacher
from modules.losses import layer_map
from modules.mlm_head import attach_fitted_mlm_head
from modules.probe import check_probe_task, linear_probe
from modules.progressive import progressive_schedule
from modules.student import StudentConfig, StudentForPreTraining
from modules.student_costs import flops, num_parameters
from modules.student_from_teacher import plan_layers, truncated_pretraining_student
from modules.teacher import Teacher, check_positions, load_teacher, read_teacher_config
from modules.teacher_cache import TeacherCache, teacher_fingerprint
from recipes.common import build_logger, build_trainer, finish_run, write_metrics
from recipes.config import RunConfig
from recipes.schemas import BUDGETS, DistillConfig  # noqa: F401  (public here too)
from recipes.shipping import save_for_serving, write_run_card
from recipes.tracking import tracked

log = logging.getLogger(__name__)


def check_compatible(cfg: RunConfig) -> None:
    """Cross-group checks, before any work: fields this recipe owns, and shapes that must agree."""
    recipe: DistillConfig = cfg.recipe
    owned = {"max_steps": -1, "val_check_interval": None}
    for name, unset in owned.items():
        if getattr(cfg.trainer, name) != unset:
            raise ValueError(
                f"trainer.{name} is set by the recipe (steps: recipe.regular_steps x recipe.flash_fraction; "
                f"validation: recipe.val_every_n_steps); leave trainer.{name} at {unset}"
            )
    if recipe.init.enabled:  # the student is the teacher's shape: checked against the teacher instead
        check_truncation(cfg, HydraConfig.get().overrides.task if HydraConfig.initialized() else [])
        return
    if cfg.data.max_seq_len > cfg.student.max_position_embeddings:
        raise ValueError(
            f"data.max_seq_len={cfg.data.max_seq_len} exceeds student.max_position_embeddings="
            f"{cfg.student.max_position_embeddings}; raise the latter or shorten the former"
        )
    if recipe.measure_latency and cfg.latency.seq_len > cfg.student.max_position_embeddings:
        raise ValueError(
            f"latency.seq_len={cfg.latency.seq_len} exceeds student.max_position_embeddings="
            f"{cfg.student.max_position_embeddings}; lower latency.seq_len or set recipe.measure_latency=false"
        )
    if recipe.probe.enabled:
        check_probe_task(cfg.task, cfg.student.max_position_embeddings)
    check_step_budget(recipe, cfg.student.num_blocks, "the student (student.num_blocks)")
    # The teacher reads the same ids: its positions and vocabulary, from its config.json alone (no weights).
    teacher_config = read_teacher_config(cfg.teacher)
    check_positions(f"teacher {cfg.teacher.name_or_path}", teacher_config, {"data.max_seq_len": cfg.data.max_seq_len})
    if cfg.student.vocab_size is not None and cfg.student.vocab_size != teacher_config.vocab_size:
        raise ValueError(
            f"student.vocab_size={cfg.student.vocab_size} but teacher {cfg.teacher.name_or_path}'s vocabulary has "
            f"{teacher_config.vocab_size} entries: the student reads the teacher tokenizer's ids, so leave "
            "student.vocab_size null"
        )


def check_truncation(cfg: RunConfig, overrides: list[str]) -> list[int]:
    """``recipe.init`` on: the teacher layers it copies (checked against the teacher's config.json), the budget for
    that depth, and no ``student`` override on the command line (``overrides``), which would go unused.

    Raises:
        ValueError: naming recipe.init.* (layers outside the teacher, too many for the scheme), the budget, the
            latency shape, or the student override and how to resolve it.
    """
    recipe: DistillConfig = cfg.recipe
    student_overrides = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] == "student"]
    if student_overrides:
        raise ValueError(
            f"{' '.join(student_overrides)}: recipe.init (truncation init) makes the student the teacher's own layers, "
            "so the student group is not used; drop the student override, or set recipe.init.num_layers=0 "
            "recipe.init.layers=null to train the student group's architecture"
        )
    teacher_config = read_teacher_config(cfg.teacher)
    check_positions(f"teacher {cfg.teacher.name_or_path}", teacher_config, {"data.max_seq_len": cfg.data.max_seq_len})
    if recipe.measure_latency:  # the truncated student embeds as many positions as its teacher
        check_positions("the truncated student (recipe.init)", teacher_config, {"latency.seq_len": cfg.latency.seq_len})
    layers = plan_layers(recipe.init, teacher_config.num_hidden_layers)
    check_step_budget(recipe, len(layers), "the truncated student (recipe.init)")
    if recipe.probe.enabled:
        check_probe_task(cfg.task, teacher_config.max_position_embeddings)
    return layers


def check_step_budget(recipe: DistillConfig, num_blocks: int, student: str) -> None:
    """Every block stage of a ``num_blocks``-block student gets a step of ``recipe``'s budget: checked before the
    teacher and the corpus load, not when the schedule is built.

    Raises:
        ValueError: naming recipe.regular_steps, the budget's fraction and ``student`` (what sets the depth).
    """
    try:
        progressive_schedule(num_blocks, recipe.total_steps, recipe.progressive_ratio)
    except ValueError as err:
        flash = f" x recipe.flash_fraction={recipe.flash_fraction}" if recipe.budget == "flash" else ""
        raise ValueError(
            f"{recipe.total_steps} {recipe.budget} steps (recipe.regular_steps={recipe.regular_steps}{flash}) are too "
            f"few for {student}, {num_blocks} blocks: {err}"
        ) from None


def config_hash(cfg: RunConfig) -> str:
    """What a resumed run must share with the checkpoint it resumes: everything that changes the training."""
    recipe = {k: v for k, v in asdict(cfg.recipe).items() if k not in _NOT_TRAINING}
    blob = json.dumps(
        {"recipe": recipe, "student": asdict(cfg.student), "teacher": asdict(cfg.teacher), "data": asdict(cfg.data),
         "seed": cfg.seed, "precision": cfg.trainer.precision},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Recipe fields that do not change what is trained (a resumed run may differ in them).
_NOT_TRAINING = (
    "measure_latency",
    "resume",
    "checkpoint_every_n_steps",
    "val_every_n_steps",
    "validate_before_training",
    "teacher_cache",
    "save_student",
    "probe",
)


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Distil ``cfg.student`` (``cfg.recipe``: a DistillConfig) from ``cfg.teacher`` for the step budget.

    Long on purpose: the recipe top to bottom (STYLE.md 1); every step that stands alone is a helper already.
    Returns:
        metrics.json's flat dict (every ``val/*`` term, sizes, steps, wall time, cache counters, latency, the
        probe's ``probe/*`` when ``recipe.probe`` is on); ranks other than 0 return it unwritten.
    Raises:
        ValueError: an inconsistent config (``check_compatible``).
    """
    recipe: DistillConfig = cfg.recipe
    check_compatible(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # Teacher: frozen, eval, eager attention. Data: MLM + NSP batches, a pure function of (seed, step).
    teacher = load_teacher(cfg.teacher)
    log.info("teacher: %s", teacher.describe())
    data = PretrainingDataModule(cfg.data, teacher.tokenizer)
    # teacher.mlm_head=fit: a head-less teacher gets BERT's MLM head, fitted on these batches (cached).
    head_fit = attach_fitted_mlm_head(teacher, cfg.teacher, data)
    check_mlm_logits(cfg, teacher)
    log.info("pre-training objective: %s", recipe.losses.describe(teacher.has_mlm_head))

    # Student: embeddings copied from the teacher, resampled to the student's width.
    student = build_student(cfg, teacher)
    config = student.config

    # Which teacher layer each block learns from, and the stage schedule.
    teacher_layers = layer_map(config.num_blocks, teacher.num_layers, recipe.layer_map, recipe.layer_map_list)
    schedule = progressive_schedule(config.num_blocks, recipe.total_steps, recipe.progressive_ratio)
    log.info(
        "student %s (%.2fM params) <- teacher layers %s; %d steps: %d per block, %d pre-training",
        config.name, num_parameters(config) / 1e6, teacher_layers, recipe.total_steps,
        schedule[0].steps if len(schedule) > 1 else 0, schedule[-1].steps,
    )  # fmt: skip

    # Callbacks (progressive freezing, a resumable last.ckpt, a progress bar) and the Trainer.
    trainer = build_distill_trainer(cfg, run_dir)

    # The loss mix, with the teacher-output cache (built now: its key needs the world size).
    cache = build_teacher_cache(cfg, teacher, data, trainer.world_size)
    module = DistillationModule(
        student=student,
        teacher=teacher,
        teacher_layers=teacher_layers,
        schedule=schedule,
        weights=recipe.losses,
        optimizer=instantiate(recipe.optimizer),
        warmup_fraction=recipe.warmup_fraction,
        seed=cfg.seed,
        teacher_cache=cache,
        mlm_kd_topk=recipe.mlm_kd_topk,
        config_hash=config_hash(cfg),
    )
    start_metrics = fit(trainer, module, data, recipe, run_dir / "checkpoints" / "last.ckpt")

    # Results: every validation term, sizes, wall time; the student in HF format (rank 0 writes).
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics.update({**start_metrics, **(head_fit.as_metrics() if head_fit else {})})  # val_start/*, teacher/*
    metrics.update(
        {
            "params": num_parameters(config),
            "params_with_heads": num_parameters(config, "pretraining"),
            "flops_per_seq@128": flops(config, seq_len=128),
            "steps": trainer.global_step,
            "wall_time_s": time.perf_counter() - started,
        }
    )
    if cache is not None:
        metrics.update({"teacher_cache/hits": cache.hits, "teacher_cache/misses": cache.misses})
    if not trainer.is_global_zero:
        return metrics
    if recipe.measure_latency:
        metrics.update(measure_latency(config, cfg.latency).as_metrics())
    if recipe.probe.enabled:  # seconds: one pass over ~3k task rows and a convex fit
        metrics.update(linear_probe(student.student, cfg.task, teacher.tokenizer, recipe.probe))
    if recipe.save_student:  # loads anywhere: stock BERT, or its code beside the weights; with a model card
        save_for_serving(student, teacher.tokenizer, run_dir / "student")
        write_run_card(run_dir / "student", cfg, metrics, "distill")
    metrics["run_dir_mb"] = finish_run(run_dir, [run_dir / "checkpoints"], cfg.keep_checkpoints)
    _print_summary(config.name, metrics, run_dir, recipe.save_student)
    return write_metrics(run_dir, metrics)


def check_mlm_logits(cfg: RunConfig, teacher: Teacher) -> None:
    """Before training: a mix with a soft-target MLM term on a teacher without MLM logits. AutoDistill's α mix and a
    teacher with ``teacher.mlm_head=false`` run without it (one log line); an absolute ``recipe.losses.mlm_kd``
    (DistilBERT's 5) otherwise fails, naming the fixes.

    Raises:
        ValueError: ``recipe.losses.mlm_kd`` > 0, the teacher has no MLM head and ``teacher.mlm_head`` is not false.
    """
    w = cfg.recipe.losses
    if teacher.has_mlm_head or not w.wants_mlm_kd():
        return
    if w.absolute and cfg.teacher.mlm_head is not False:
        raise ValueError(
            f"recipe.losses.mlm_kd={w.mlm_kd} needs the teacher's MLM logits, but teacher {cfg.teacher.name_or_path} "
            "has no MLM head: set teacher.mlm_head=fit (fits one on the corpus, cached), or run without the "
            "soft-target term with recipe.losses.mlm_kd=0 or teacher.mlm_head=false"
        )
    why = "teacher.mlm_head=false" if cfg.teacher.mlm_head is False else "the teacher has no MLM head"
    log.info("L_MLM-KD disabled (%s): the soft-target MLM term is off; teacher.mlm_head=fit gives it one", why)


def build_student(cfg: RunConfig, teacher: Teacher) -> StudentForPreTraining:
    """The student of ``cfg.student`` on the teacher's vocabulary, its embeddings initialised from the
    teacher's (resampled to its width) unless ``student.init_embeddings_from_teacher`` is off; with ``recipe.init``
    the teacher itself with the chosen layers (``modules.student_from_teacher``)."""
    if cfg.recipe.init.enabled:
        layers = plan_layers(cfg.recipe.init, teacher.num_layers)
        student, copied = truncated_pretraining_student(teacher, layers)
        log.info("truncation init (recipe.init): student = %s; %s; the student group (%s) is not used",
                 student.config.name, copied, cfg.student.name)  # fmt: skip
        return student
    hf_config = StudentConfig.from_spec(
        cfg.student,
        vocab_size=teacher.vocab_size, pad_token_id=teacher.tokenizer.pad_token_id
    )
    student = StudentForPreTraining(hf_config)
    if cfg.student.init_embeddings_from_teacher:
        init_embeddings_from_teacher(
            student.student, teacher.embedding_weights(), cfg.student.embedding_resample
        )
    return student


def build_distill_trainer(cfg: RunConfig, run_dir: Path) -> L.Trainer:
    """The Trainer with this recipe's callbacks and step budget (``trainer.max_steps`` is the recipe's)."""
    recipe: DistillConfig = cfg.recipe
    callbacks = [
        ProgressiveTransfer(),
        # Only last.ckpt: distillation has no validation metric worth ranking checkpoints by mid-run.
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=recipe.checkpoint_every_n_steps,
        ),
    ]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(StepProgressBar())
    return build_trainer(
        cfg.trainer,
        str(run_dir),
        build_logger(cfg, str(run_dir)),
        callbacks,
        max_steps=recipe.total_steps,
        val_check_interval=recipe.val_every_n_steps or None,
        check_val_every_n_epoch=None if recipe.val_every_n_steps else cfg.trainer.check_val_every_n_epoch,
        use_distributed_sampler=False,  # the data module shards each step's batch by rank itself
        # Progressive stages leave every other block (and the heads) without gradients: plain DDP treats
        # that as an error, so let its reducer mark unused parameters as ready.
        strategy="ddp_find_unused_parameters_true" if cfg.trainer.strategy == "ddp" else cfg.trainer.strategy,
    )


def build_teacher_cache(
    cfg: RunConfig, teacher: Teacher, data: PretrainingDataModule, world_size: int
) -> TeacherCache | None:
    """The teacher-output cache (None when ``recipe.teacher_cache.mode`` is disabled).

    Shared by every student trained on the same teacher + data + masking + batch layout, none of which
    depend on the student; the batch layout depends on the world size, hence the argument.
    """
    recipe: DistillConfig = cfg.recipe
    if recipe.teacher_cache.mode == "disabled":
        return None
    d = cfg.data
    layout = {
        "mask": [d.mlm_probability, d.mask_token_prob, d.random_token_prob], "seed": d.seed,
        "batch": [d.batch_size, d.eval_batch_size], "world": world_size, "precision": cfg.trainer.precision,
        "mlm_head": teacher.has_mlm_head, "topk": recipe.mlm_kd_topk, "dtype": recipe.teacher_cache.dtype,
    }  # fmt: skip
    # What TinyBERT's terms add to an entry; named only when stored, so AutoDistill's keys stay what they were.
    extras = {"scores": recipe.losses.attention_scores > 0, "embeddings": recipe.losses.embedding > 0}
    layout.update({k: True for k, on in extras.items() if on})
    layout_hash = hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]
    return TeacherCache(
        recipe.teacher_cache, f"{teacher_fingerprint(teacher)}-{data.cache_key()}-{layout_hash}"
    )


def fit(
    trainer: L.Trainer,
    module: DistillationModule,
    data: PretrainingDataModule,
    recipe: DistillConfig,
    last: Path,
) -> dict[str, float]:
    """Train (resuming from ``last`` when it exists and ``recipe.resume``), then validate the final student.

    Returns:
        ``val_start/*``: the fresh student's validation terms when ``recipe.validate_before_training``
        (and the run did not resume), else nothing.
    """
    resume_from = str(last) if recipe.resume and last.exists() else None
    start_metrics = {}
    with warnings.catch_warnings():
        # Expected here, and misleading: the teacher and frozen blocks are in eval mode on purpose, and the
        # step sampler does resume mid-epoch exactly (tests/test_distill.py), which Lightning cannot see.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings(
            "ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended"
        )
        if resume_from:
            log.info("resuming from %s", resume_from)
        elif recipe.validate_before_training:
            trainer.validate(module, datamodule=data, verbose=False)
            start_metrics = {
                k.replace("val/", "val_start/"): float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("val/")
            }
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        # Validate the final student unless fit just did (a run resumed at its last step trains nothing).
        validated_at_end = recipe.val_every_n_steps and trainer.global_step % recipe.val_every_n_steps == 0
        if not validated_at_end or "val/loss" not in trainer.callback_metrics:
            trainer.validate(module, datamodule=data, verbose=False)
    return start_metrics


def _print_summary(name: str, metrics: dict[str, float], run_dir: Path, saved_student: bool) -> None:
    table = Table(title=f"{name}: {metrics['steps']:.0f} steps in {metrics['wall_time_s']:.0f} s")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("val/mlm_acc", "val/nsp_acc", "val/loss", "val/mha", "val/fm", "val/mlm", "val/mlm_kd", "val/nsp",
                "val/cos", "val/attn_score", "val/emb", "probe/acc"):  # fmt: skip
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4f}")
    table.add_row("params", f"{metrics['params'] / 1e6:.2f}M")
    table.add_row("GFLOPs / seq @128", f"{metrics['flops_per_seq@128'] / 1e9:.2f}")
    Console().print(table)
    Console().print(f"metrics.json{' and student/ (HF format)' if saved_student else ''} in {run_dir}")
