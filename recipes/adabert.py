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
   the same loss minus L_E; the best-dev child is saved in HF format (``student/``);
5. evaluate: dev and test metrics, params, FLOPs, measured latency of child and teacher, speed-up;
   ``report.md`` with the derived cell as text and a picture, probe accuracies, the search trajectory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from rich.progress import track
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import modules  # noqa: F401  (registers the students with the Auto classes)
from callbacks.latency import measure_latency
from core.assets import file_fingerprint, resolve_path
from core.files import torch_save_atomic
from datamodules.classification import ClassificationDataModule, TaskDataConfig
from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification
from modules.adabert_child import child_config, child_flops, child_params, inherit_weights
from modules.adabert_ops import OP_NAMES, DerivedArchitecture, cell_edges
from modules.adabert_training import (
    AdaBertModule,
    ArchOptimizer,
    TauSchedule,
    TeacherTargets,
    WeightOptimizer,
    train_probe,
)
from modules.finetuning import metric_names
from modules.losses import KDSettings
from recipes import finetune
from recipes.common import build_logger, build_trainer, write_metrics
from recipes.config import RunConfig
from recipes.finetune import FinetuneConfig

log = logging.getLogger(__name__)


@dataclass
class AdaBertRecipeConfig:
    """Hydra schema of recipe=adabert (paper defaults unless marked demo)."""

    name: str = "adabert"
    # A classifier fine-tuned on the task (recipe=finetune's <run dir>/model); null: fine-tune the teacher
    # group's model here first, with teacher_finetune.
    teacher: str | None = None
    teacher_finetune: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(max_steps=300, measure_latency=False)  # demo budget
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
    cache_dir: str = "~/.cache/distill-recipes/adabert"  # teacher targets, keyed by teacher + data
    measure_latency: bool = True

    def __post_init__(self) -> None:
        positive = ("embedding_size", "hidden_size", "max_cells", "num_nodes", "search_epochs", "retrain_epochs",
                    "probe_epochs", "lr", "lr_min", "arch_lr", "temperature", "tau_start", "tau_end")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"recipe.{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"recipe.gamma: the KD weight must be in [0, 1], got {self.gamma}")
        if self.beta < 0:
            raise ValueError(f"recipe.beta: the efficiency weight must be >= 0, got {self.beta}")
        if self.tau_end > self.tau_start:
            raise ValueError(
                f"recipe.tau_end ({self.tau_end}) must be <= recipe.tau_start ({self.tau_start})"
            )
        if self.lr_min > self.lr:
            raise ValueError(f"recipe.lr_min ({self.lr_min}) must be <= recipe.lr ({self.lr})")
        if not 0 <= self.arch_warmup_epochs < self.search_epochs:
            raise ValueError(
                f"recipe.arch_warmup_epochs={self.arch_warmup_epochs}: must be >= 0 and leave search epochs to "
                f"move the architecture (< recipe.search_epochs={self.search_epochs})"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(
                f"recipe.grad_clip: a max gradient norm > 0, or null for none; got {self.grad_clip}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"recipe.momentum: must be in [0, 1), got {self.momentum}")


def check_config(cfg: RunConfig) -> None:
    """What this recipe cannot do, said before any work."""
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


def run(cfg: RunConfig) -> dict[str, float]:
    recipe: AdaBertRecipeConfig = cfg.recipe
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()

    # 1. The fine-tuned teacher.
    teacher_dir = teacher_checkpoint(cfg, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    if teacher.config.num_labels != data.num_labels:
        raise ValueError(
            f"recipe.teacher has {teacher.config.num_labels} labels but task {cfg.task.name} has {data.num_labels}: "
            "give a teacher fine-tuned on this task"
        )

    # 2. Its knowledge: logits and layer probes on every training row (cached).
    knowledge = teacher_knowledge(
        teacher, teacher_dir, data, recipe, progress=cfg.trainer.enable_progress_bar
    )
    log.info("teacher dev %s; probe dev accuracy per layer: %s", knowledge.teacher_dev,
             [round(a, 3) for a in knowledge.probe_dev_acc])  # fmt: skip

    # 3. Search.
    metrics_names = metric_names(cfg.task.glue_task if cfg.task.source == "glue" else None, data.num_labels)
    search_cfg = AdaBertConfig(
        vocab_size=teacher.config.vocab_size, embedding_size=recipe.embedding_size, hidden_size=recipe.hidden_size,
        max_cells=recipe.max_cells, num_nodes=recipe.num_nodes, num_labels=data.num_labels,
        pair=len(cfg.task.text_columns) == 2, max_length=cfg.task.max_seq_len,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    supernet = AdaBertForSequenceClassification(search_cfg)
    factorise_embeddings(supernet, teacher)
    search = train_stage(cfg, supernet, knowledge.targets, metrics_names, data, run_dir / "search", recipe.search_epochs,
                         beta=recipe.beta)  # fmt: skip
    arch = supernet.derive()
    log.info("derived child:\n%s", arch.describe(recipe.num_nodes))

    # 4. Retrain the child.
    child = AdaBertForSequenceClassification(child_config(search_cfg, arch))
    if recipe.inherit_weights:
        inherit_weights(child, supernet)
    else:
        factorise_embeddings(child, teacher)
    student_dir = run_dir / "student"

    def save_child(best: dict[str, float]) -> None:
        child.save_pretrained(student_dir)
        tokenizer.save_pretrained(student_dir)

    retrain = train_stage(cfg, child, knowledge.targets, metrics_names, data, run_dir / "retrain",
                          recipe.retrain_epochs, beta=0.0, on_best=save_child)  # fmt: skip

    # 5. Evaluate the best-dev child beside the teacher.
    best = AdaBertForSequenceClassification.from_pretrained(student_dir).eval()
    metrics: dict[str, float] = {f"search/{k}": v for k, v in search.module.best.items()}
    metrics.update(retrain.module.best)
    if "test" in data.split_sizes and data.test_labelled:
        retrain.module.model = best
        retrain.trainer.test(retrain.module, datamodule=data, verbose=False)
        metrics.update(
            {k: float(v) for k, v in retrain.trainer.callback_metrics.items() if k.startswith("test/")}
        )
        metrics.update({f"teacher/{k}": v for k, v in knowledge.teacher_test.items()})
    metrics.update({f"teacher/{k}": v for k, v in knowledge.teacher_dev.items()})
    if not retrain.trainer.is_global_zero:  # under DDP one rank measures and reports
        return metrics
    teacher_params = teacher.num_parameters()
    metrics.update({
        "num_cells": float(arch.num_cells), "params": float(child_params(best.config)),
        # without the (factorised) embedding tables: what the search itself sized
        "params_non_embedding": float(child_params(best.config, include_embeddings=False)),
        "teacher/params_non_embedding": float(teacher_params - embedding_params(teacher)),
        "flops_per_seq@128": float(child_flops(best.config, 128)), "teacher/params": float(teacher_params),
        "compression": teacher_params / child_params(best.config),
    })  # fmt: skip
    if recipe.measure_latency:
        student_latency = measure_latency(best, cfg.latency)
        teacher_latency = measure_latency(teacher, cfg.latency)
        metrics.update(student_latency.as_metrics())
        metrics.update({f"teacher/{k}": v for k, v in teacher_latency.as_metrics().items()})
        metrics["speedup"] = teacher_latency.p50_ms / student_latency.p50_ms
    for i, acc in enumerate(knowledge.probe_dev_acc, start=1):
        metrics[f"probe/layer_{i}_dev_acc"] = acc
    metrics["wall_time_s"] = time.perf_counter() - started
    write_report(run_dir, cfg, arch, metrics, knowledge, search.module.history)
    return write_metrics(run_dir, metrics)


# ------------------------------------------------------------------------------------------- the teacher


def teacher_checkpoint(cfg: RunConfig, run_dir: Path) -> str:
    """``recipe.teacher``, or the teacher group's model fine-tuned on the task now (into <run dir>/teacher)."""
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


@dataclass
class TeacherKnowledge:
    """The teacher's targets on the training split, and how good the teacher and its probes are on dev."""

    targets: TeacherTargets
    probe_dev_acc: list[float]
    teacher_dev: dict[str, float]
    teacher_test: dict[str, float]


@torch.no_grad()
def teacher_outputs(
    teacher: torch.nn.Module, loader: Any, description: str = "teacher", progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (N, C), [CLS] states of every layer (L, N, H) and labels (N,) of one split, in split order."""
    logits, states, labels = [], [], []
    for batch in track(loader, description=description, total=len(loader), disable=not progress):
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"], output_hidden_states=True)  # fmt: skip
        logits.append(out.logits.float())
        states.append(torch.stack([h[:, 0] for h in out.hidden_states[1:]]).float())
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(states, dim=1), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    keep = labels >= 0
    return float((logits[keep].argmax(-1) == labels[keep]).float().mean())


def teacher_knowledge(
    teacher: torch.nn.Module,
    teacher_dir: str,
    data: ClassificationDataModule,
    recipe: AdaBertRecipeConfig,
    progress: bool = False,
) -> TeacherKnowledge:
    weights = sorted(Path(teacher_dir).glob("*.safetensors")) or sorted(Path(teacher_dir).glob("*.bin"))
    key = hashlib.sha256(json.dumps({
        "teacher": [file_fingerprint(p) for p in weights], "data": str(data.cache_path),
        "probe_epochs": recipe.probe_epochs, "version": 1}, sort_keys=True).encode()).hexdigest()[:24]  # fmt: skip
    cache = resolve_path(recipe.cache_dir) / f"targets-{key}.pt"
    if cache.exists():
        log.info("teacher targets from %s", cache)
        payload = torch.load(cache, weights_only=True)
    else:
        log.info("teacher targets: running the teacher over %s and training %s probes", data.split_sizes,
                 teacher.config.num_hidden_layers)  # fmt: skip
        train_logits, train_states, train_labels = teacher_outputs(
            teacher, data.eval_dataloader("train"), "teacher over train", progress
        )
        dev_logits, dev_states, dev_labels = teacher_outputs(
            teacher, data.eval_dataloader("validation"), "teacher over dev", progress
        )
        probes = [
            train_probe(s, train_labels, data.num_labels, epochs=recipe.probe_epochs) for s in train_states
        ]
        with torch.no_grad():
            probe_logits = torch.stack([p(s) for p, s in zip(probes, train_states)])
            probe_dev_acc = [accuracy(p(s), dev_labels) for p, s in zip(probes, dev_states)]
        payload = {"logits": train_logits, "probe_logits": probe_logits, "probe_dev_acc": probe_dev_acc,
                   "teacher_dev": {"val/acc": accuracy(dev_logits, dev_labels)}, "teacher_test": {}}  # fmt: skip
        if "test" in data.split_sizes and data.test_labelled:
            test_logits, _, test_labels = teacher_outputs(
                teacher, data.eval_dataloader("test"), "teacher over test", progress
            )
            payload["teacher_test"] = {"test/acc": accuracy(test_logits, test_labels)}
        torch_save_atomic(payload, cache)  # ranks that computed the same targets never see a half-written file
    return TeacherKnowledge(
        targets=TeacherTargets(payload["logits"], payload["probe_logits"]),
        probe_dev_acc=list(payload["probe_dev_acc"]),
        teacher_dev=dict(payload["teacher_dev"]),
        teacher_test=dict(payload["teacher_test"]),
    )


def embedding_params(model: torch.nn.Module) -> int:
    """The embedding block's parameters (word, position, type tables and their LayerNorm in BERT-likes)."""
    block = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    return sum(p.numel() for p in block.parameters())


@torch.no_grad()
def factorise_embeddings(student: AdaBertForSequenceClassification, teacher: torch.nn.Module) -> None:
    """ALBERT-style: the teacher's word embeddings (V, H) by their best rank-E approximation, U_E·S_E (V, E)."""
    weight = teacher.get_input_embeddings().weight.float()
    u, s, _ = torch.linalg.svd(weight, full_matrices=False)
    e = student.config.embedding_size
    if e > s.numel():
        raise ValueError(f"recipe.embedding_size={e} exceeds the teacher's embedding width {s.numel()}")
    student.embeddings.weight.copy_(u[:, :e] * s[:e])


# ------------------------------------------------------------------------------------------- training


@dataclass
class Stage:
    module: AdaBertModule
    trainer: L.Trainer


def train_stage(
    cfg: RunConfig,
    model: AdaBertForSequenceClassification,
    targets: TeacherTargets,
    metrics_names: tuple[str, ...],
    data: ClassificationDataModule,
    stage_dir: Path,
    epochs: int,
    beta: float,
    on_best: Any = None,
) -> Stage:
    """Search (a super-network) or retrain (a child) for ``epochs``; resumes from ``stage_dir``'s last.ckpt."""
    recipe: AdaBertRecipeConfig = cfg.recipe
    module = AdaBertModule(
        model, targets, metrics_names, kd=KDSettings(gamma=recipe.gamma, temperature=recipe.temperature),
        beta=beta, tau=TauSchedule(start=recipe.tau_start, end=recipe.tau_end),
        weight_optimizer=WeightOptimizer(lr_start=recipe.lr, lr_end=recipe.lr_min, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip),
        arch_optimizer=ArchOptimizer(lr=recipe.arch_lr, weight_decay=recipe.arch_weight_decay,
                                     warmup_epochs=recipe.arch_warmup_epochs),
        seed=cfg.seed, on_best=on_best,
    )  # fmt: skip
    # Every epoch: the newest checkpoint (top-1 without a monitor), last.ckpt linked to it. With save_top_k=0
    # Lightning writes last.ckpt only at the end of fit, and a crash would lose the whole stage.
    checkpoints = ModelCheckpoint(
        dirpath=stage_dir / "checkpoints", save_top_k=1, save_last="link", every_n_epochs=1
    )
    callbacks = [checkpoints] + ([RichProgressBar()] if cfg.trainer.enable_progress_bar else [])
    trainer = build_trainer(cfg.trainer, str(stage_dir), build_logger(cfg.logger, str(stage_dir)), callbacks,
                            max_epochs=epochs, enable_checkpointing=True)  # fmt: skip
    last = stage_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None)
    return Stage(module, trainer)


# --------------------------------------------------------------------------------------------- report


def draw_cell(arch: DerivedArchitecture, num_nodes: int, path: Path) -> None:
    """The derived cell as a DAG: inputs left, nodes in a column, edges labelled with their op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["c_{k-2}", "c_{k-1}"] + [f"node {i}" for i in range(num_nodes)] + ["output"]
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for i in range(num_nodes):
        pos[2 + i] = (1.0 + i, 1.2 if i % 2 == 0 else -1.2)
    out = 2 + num_nodes
    pos[out] = (1.0 + num_nodes, 0.0)
    fig, ax = plt.subplots(figsize=(2.2 * (num_nodes + 2), 3.6))
    for (node, j), op in zip(cell_edges(num_nodes), arch.genotype):
        if op == "zero":
            continue
        (x0, y0), (x1, y1) = pos[j], pos[2 + node]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.4"})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=7, ha="center", va="center",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    for i in range(num_nodes):
        (x0, y0), (x1, y1) = pos[2 + i], pos[out]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.75", "ls": "--"})
    for k, (x, y) in pos.items():
        ax.text(x, y, names[k], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "#dde7f5" if k < 2 or k == out else "#f5e6cc"})  # fmt: skip
    ax.set_xlim(-0.6, num_nodes + 1.6)
    ax.set_ylim(-1.8, 1.8)
    ax.axis("off")
    ax.set_title(f"derived cell (x{arch.num_cells}); dashed: attentive sum")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_search(history: list[dict], probe_dev_acc: list[float], path: Path) -> None:
    """Left: the argmax child's dev score and K per search epoch. Right: probe accuracy per teacher layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if history:
        epochs = range(1, len(history) + 1)
        left.plot(epochs, [h["val/score"] for h in history], "o-", label="dev score of the argmax child")
        left.set_xlabel("search epoch")
        left.set_ylabel("dev score")
        twin = left.twinx()
        twin.step(epochs, [h["num_cells"] for h in history], where="mid", color="C1", label="K")
        twin.set_ylabel("K (cells)")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.legend(loc="lower right", fontsize=8)
    right.bar(range(1, len(probe_dev_acc) + 1), probe_dev_acc, color="C2")
    right.set_xlabel("teacher layer")
    right.set_ylabel("probe dev accuracy")
    right.set_ylim(min(probe_dev_acc + [0.5]) - 0.05, 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, cfg: RunConfig, arch: DerivedArchitecture, metrics: dict[str, float],
                 knowledge: TeacherKnowledge, history: list[dict]) -> Path:  # fmt: skip
    recipe: AdaBertRecipeConfig = cfg.recipe
    draw_cell(arch, recipe.num_nodes, run_dir / "cell.png")
    plot_search(history, knowledge.probe_dev_acc, run_dir / "search.png")

    def cell(key: str, fmt: str) -> str:
        return format(metrics[key], fmt) if key in metrics else "—"

    lines = [
        f"# AdaBERT on {cfg.task.name}",
        "",
        f"Search: {recipe.search_epochs} epochs, γ = {recipe.gamma}, β = {recipe.beta}, T = {recipe.temperature}, "
        f"τ {recipe.tau_start} → {recipe.tau_end}; retrain: {recipe.retrain_epochs} epochs"
        f"{' from the searched weights' if recipe.inherit_weights else ''}.",
        "",
        "| model | params (M) | GFLOPs/seq@128 | latency p50 (ms) | dev acc | test acc |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher | {metrics['teacher/params'] / 1e6:.2f} | — | {cell('teacher/latency/p50_ms', '.2f')} | "
        f"{cell('teacher/val/acc', '.4f')} | {cell('teacher/test/acc', '.4f')} |",
        f"| AdaBERT (K = {arch.num_cells}) | {metrics['params'] / 1e6:.2f} | {metrics['flops_per_seq@128'] / 1e9:.3f} | "
        f"{cell('latency/p50_ms', '.2f')} | {cell('val/acc', '.4f')} | {cell('test/acc', '.4f')} |",
        "",
        f"{metrics['compression']:.1f}× smaller"
        + (f", {metrics['speedup']:.1f}× faster (p50, bs1 × {cfg.latency.seq_len}, this device)" if "speedup" in metrics
           else "")
        + " than the teacher.",
        "",
        "## Derived cell",
        "",
        "```",
        arch.describe(recipe.num_nodes),
        "```",
        "",
        "![cell](cell.png)",
        "",
        "## Search trajectory and the teacher's layer probes",
        "",
        "![search](search.png)",
        "",
        "Op counts in the cell: " + ", ".join(f"{o} {arch.genotype.count(o)}" for o in OP_NAMES if o in arch.genotype),
        "",
    ]  # fmt: skip
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    (run_dir / "architecture.json").write_text(json.dumps(
        {"num_cells": arch.num_cells, "genotype": arch.genotype, "history": history}, indent=1))  # fmt: skip
    return path
