"""Recipe `leaderboard`: "which small BERT is best?" answered on one teacher, one task, one budget, this device.

    python run.py recipe=leaderboard                                    # the offline demo (README, "Leaderboard")
    python run.py recipe=leaderboard 'recipe.methods=[teacher,mobilebert_baseline]' 'recipe.seeds=[0,1]'
    python run.py recipe=leaderboard teacher=bert_base task=glue trainer=gpu   # the deck's GLUE comparison
    python -m reports.leaderboard <run dir>                             # rebuild the table from the cells

Reads top to bottom: for every method of ``recipe.methods`` (recipes/methods.py: each a chain of stages, every stage
one run of an existing recipe) and every seed, one *cell* in ``<dir>/<method>/seed<k>``: its stages run in order in
``<cell>/<stage>``, composed by Hydra from the leaderboard's own command line (teacher, task, data, trainer, latency:
the same for every cell) + the stage's overrides + the budget every method shares (``recipe.pretrain_steps``, the
students' fine-tuning epochs and lr, task KD from the fine-tuned teacher: on or off for all). The teacher's cell
runs first (the reference row and the task-KD teacher). Then the cell's final model is measured the same way for
every method (``measure_row``: params, non-embedding params, stored size, FLOPs, p50 at batch 1 and at the serving
batch) into ``<cell>/row.json``, and the table, plots and report are (re)built from every row.json under the dir.

Resumable: a stage whose ``metrics.json`` exists is not run again, a cell with ``row.json`` is not measured again,
and a killed stage resumes from its own checkpoint. Distributable: ``recipe.dir`` shared by jobs of a sweep
(``-m 'recipe.methods=[teacher],[pkd],[distilbert]' recipe.dir=lb``, any launcher); fine-tune the teacher first.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from rich.console import Console

from core.files import write_json_atomic, write_text_atomic
from recipes.common import write_metrics
from recipes.config import RunConfig, register_configs
from recipes.leaderboard_config import LeaderboardConfig
from recipes.methods import METHODS, MISSING, Method, Stage, method
from recipes.prune_config import PruneConfig
from recipes.schemas import AdaBertRecipeConfig, AutoDistillConfig, DistillConfig, FinetuneConfig
from recipes.tracking import tracked
from reports.leaderboard import read_rows, write_report

log = logging.getLogger(__name__)
console = Console()

# The recipes a stage may run: name -> (module, schema). Registered with Hydra here because run.py registers only
# the recipes its command line names (recipe=leaderboard).
STAGE_RECIPES = {
    "regular_distill": ("recipes.distill", DistillConfig),
    "flash_distill": ("recipes.distill", DistillConfig),
    "finetune": ("recipes.finetune", FinetuneConfig),
    "autodistill": ("recipes.autodistill", AutoDistillConfig),
    "adabert": ("recipes.adabert", AdaBertRecipeConfig),
    "prune": ("recipes.prune", PruneConfig),
}


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Every cell (method x seed), then the table (module docstring).

    Returns:
        ``<method>/<column>`` for every row of the table (means over seeds), also in <run dir>/metrics.json.
    Raises:
        ValueError: an unknown method in ``recipe.methods`` (before any work).
        RuntimeError: not started through run.py (the stages are composed by Hydra).
    """
    recipe: LeaderboardConfig = cfg.recipe
    methods = [method(name) for name in recipe.methods]  # unknown names fail now
    if not HydraConfig.initialized():
        raise RuntimeError("recipe=leaderboard composes its stages with Hydra: start it with python run.py")
    register_configs({name: schema for name, (_, schema) in STAGE_RECIPES.items()})
    root = Path(recipe.dir).expanduser() if recipe.dir else Path(cfg.run_dir)
    base = base_overrides()
    teacher_model = root / "teacher" / f"seed{recipe.seeds[0]}" / "finetune" / "model"
    # The teacher's cell always runs first: the reference row, the task-KD teacher, AdaBERT's guide.
    methods = [METHODS["teacher"], *[m for m in methods if m.name != "teacher"]]
    cells = [(m, seed) for m in methods for seed in recipe.seeds]
    preflight(cfg, recipe, cells, root, base, teacher_model)  # every stage composes, before any training
    started = time.perf_counter()
    for n, (meth, seed) in enumerate(cells, 1):
        cell = root / meth.name / f"seed{seed}"
        console.rule(f"[bold]cell {n}/{len(cells)}[/]: {meth.name}, seed {seed}")
        run_cell(cfg, recipe, meth, seed, cell, base, teacher_model)
    rows = read_rows(root)
    skipped = {name: MISSING[name] for name in MISSING if name not in recipe.methods}
    metrics = write_report(root, rows, skipped, budget_line(recipe))
    metrics["wall_time_s"] = time.perf_counter() - started
    console.print(f"leaderboard: {root / 'leaderboard.md'}")
    return write_metrics(Path(cfg.run_dir), metrics)


def preflight(
    cfg: RunConfig, recipe: LeaderboardConfig, cells: list[tuple[Method, int]], root: Path, base: list[str],
    teacher_model: Path,
) -> None:
    """Compose every stage of every cell and run the checks a recipe can do before its inputs exist
    (``check_compatible`` of the corpus stages: step budgets, widths, positions), so a bad setting fails now.

    Raises:
        ValueError: the first stage that does not compose or fails its recipe's checks.
    """
    for meth, seed in cells:
        cell, prev = root / meth.name / f"seed{seed}", root / meth.name / f"seed{seed}"
        for stage in meth.stages:
            out = cell / stage.name
            stage_cfg = stage_config(cfg, recipe, stage, seed, base, {"cell": cell, "prev": prev, "teacher": teacher_model, "method": meth.name}, out)
            if stage.kind == "pretrain" and not (out / "metrics.json").exists():
                module = importlib.import_module(STAGE_RECIPES[stage_cfg.recipe.name][0])
                try:
                    module.check_compatible(stage_cfg)
                except ValueError as err:
                    raise ValueError(f"leaderboard method {meth.name}, stage {stage.name}: {err}") from err
            prev = out


def run_cell(
    cfg: RunConfig, recipe: LeaderboardConfig, meth: Method, seed: int, cell: Path, base: list[str],
    teacher_model: Path,
) -> dict[str, Any]:
    """One method at one seed: its stages (skipping finished ones), then its row (``<cell>/row.json``)."""
    row_path = cell / "row.json"
    if row_path.exists():
        return json.loads(row_path.read_text())
    prev = cell
    stage_metrics = []
    for stage in meth.stages:
        out = cell / stage.name
        values = {"cell": cell, "prev": prev, "teacher": teacher_model, "method": meth.name}
        stage_cfg = stage_config(cfg, recipe, stage, seed, base, values, out)
        out.mkdir(parents=True, exist_ok=True)  # what this stage ran with, for a reader and for rebuilding the table
        write_text_atomic(out / "stage.yaml", OmegaConf.to_yaml(OmegaConf.structured(stage_cfg)))
        stage_metrics.append(run_stage(stage_cfg))
        prev = out
    from recipes.leaderboard_row import measure_row  # torch, transformers: only once a cell is measured

    row = measure_row(cfg, recipe, meth, seed, cell, stage_metrics)
    write_json_atomic(row_path, row, indent=2)
    return row


def run_stage(stage_cfg: RunConfig) -> dict[str, float]:
    """One stage's recipe, unless an earlier run finished it (its metrics.json exists)."""
    out = Path(stage_cfg.run_dir)
    if (out / "metrics.json").exists():
        log.info("stage %s finished earlier: reusing it", out)
        return json.loads((out / "metrics.json").read_text())
    module = importlib.import_module(STAGE_RECIPES[stage_cfg.recipe.name][0])
    return module.run(stage_cfg)


def shared_overrides(stage: Stage, recipe: LeaderboardConfig) -> list[str]:
    """The budget every method gets for a stage of this kind (recipes/methods.py)."""
    if stage.kind == "pretrain":
        return [f"recipe.regular_steps={recipe.pretrain_steps}"]
    if stage.kind == "teacher":
        return [f"recipe.epochs={recipe.teacher_epochs}", f"recipe.optimizer.lr={recipe.teacher_lr}",
                "recipe.measure_latency=false"]  # fmt: skip
    if stage.kind == "finetune":
        kd = ["recipe.task_kd.teacher={teacher}"] if recipe.task_kd else []
        return [f"recipe.epochs={recipe.student_epochs}", f"recipe.optimizer.lr={recipe.student_lr}",
                "recipe.measure_latency=false", *kd]  # fmt: skip
    return []


def stage_config(
    cfg: RunConfig, recipe: LeaderboardConfig, stage: Stage, seed: int, base: list[str], values: dict, out: Path
) -> RunConfig:
    """The stage's run config: the leaderboard's command line, the stage's overrides, the shared budget, the seed.

    Raises:
        ValueError: the composed config fails a schema check (names the stage and the override list).
    """
    extra = recipe.extra.get(values["method"], [])
    own = [o.format(**values) for o in (*stage.overrides, *extra, *shared_overrides(stage, recipe))]
    overrides = [*base, *own, f"seed={seed}"]
    try:
        composed = compose(config_name="run", overrides=overrides)
        stage_cfg: RunConfig = OmegaConf.to_object(composed)
    except Exception as err:  # Hydra's and the schemas' errors: say which stage asked for what
        raise ValueError(f"leaderboard stage {out}: the overrides {own} do not compose: {err}") from err
    stage_cfg.run_dir = str(out)
    return stage_cfg


def base_overrides() -> list[str]:
    """The leaderboard's own command-line overrides that every stage inherits: all but ``recipe`` and its keys."""
    task = HydraConfig.get().overrides.task
    return [o for o in task if not o.lstrip("+~").startswith(("recipe", "hydra", "seed="))]


def budget_line(recipe: LeaderboardConfig) -> str:
    """The compute budget every method got, in words (the report's second line)."""
    kd = "with task KD from the fine-tuned teacher" if recipe.task_kd else "on the labels alone"
    return (
        f"Budget per method: {recipe.pretrain_steps} optimizer steps per pre-training (corpus) stage; fine-tuning "
        f"{recipe.student_epochs} epoch(s) at lr {recipe.student_lr:g} {kd}; the teacher {recipe.teacher_epochs} "
        f"epoch(s) at lr {recipe.teacher_lr:g}; seeds {list(recipe.seeds)}. Pipelines (autodistill, adabert) keep "
        "their own demo budgets."
    )
