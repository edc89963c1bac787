"""Flash fidelity (AutoDistill §4.7): which flash-distillation metric ranks students as their regular distillation
and their downstream score do? A study you can rerun:

    .venv/bin/python benchmarks/fidelity.py [--out outputs/fidelity] [--students 8] [--seeds 2] [--finetune-seeds 1]
        [--quick] [overrides ...]

For each of --students hand-picked students (STUDENTS: Table 1 x depth 2..6, chosen to spread size, latency and
shape), in this process and through the recipes' own ``run(cfg)``:

1. flash distillation with --seeds seeds (``seed`` seeds the student's initialisation and dropout; the batches,
   their masking, the validation set and the probe's train subset stay fixed, so seeds differ only in training);
2. regular distillation once (seed 0);
3. fine-tuning of the regular student on the task group's data, with --finetune-seeds seeds (``seed`` seeds the
   classifier head, dropout and batch order); the downstream score is their mean, and with two or more seeds the
   table says how well two fine-tuning seeds rank the students alike (the ceiling of any metric's τ).

The budgets are the default pipeline's, read from its config classes (``recipe=autodistill``: flash =
``regular_steps x flash_fraction``, regular = ``regular_steps``, fine-tuning = ``recipe.downstream``), so the study
follows the defaults when they change; overrides (``recipe.regular_steps=500``, ``task=glue task.glue_task=sst2``)
apply to it as to ``python run.py``. Every flash and regular run also fits the linear probe (modules/probe.py,
``recipe.probe.max_train_examples``, default 2000 here) and reports the last block's layer-wise terms.

Each stage runs in its own dir under --out (flash/<student>/seed<k>, regular/<student>,
finetune/<budget>/<student>, and <student>-seed<k> for fine-tuning seed k > 0) and a rerun reuses the finished ones (metrics.json + product + the same config, hashed
in stage.json), so adding students or seeds costs only the new runs, and another fine-tuning budget
(``recipe.downstream.max_steps=300``) only the fine-tunings; a finished flash or regular run of other settings in
the same --out stops the study (pick another --out). After every student the tables are rewritten:
fidelity.md (Kendall τ / Spearman ρ of every candidate flash metric vs the regular metric and vs the downstream
score, seed spread; reports/fidelity.py), fidelity.csv (per student x seed), fidelity.png, in --out (the latest run)
and in finetune/<budget>/ (each fine-tuning budget's); the table is printed too.

Latency is measured by each flash run (callbacks/latency.py, cached in <out>/latency.json, not the shared cache)
with contention detection off: on a shared CPU it shows the spread of the students, not their serving latency.
--quick: tiny budgets (40 regular steps, 20 flash, 10 fine-tuning, a 200-row probe) for a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from rich.console import Console

import run
from core.files import write_json_atomic
from modules.probe import ProbeConfig
from modules.student_spec import BlockSpec
from recipes import distill, finetune
from recipes.autodistill import AutoDistillConfig, finished, trial_config
from recipes.config import RunConfig
from recipes.finetune import FinetuneConfig
from reports.fidelity import StudentResult, write_fidelity

console = Console(width=160)  # table rows stay one line in a log file

# (block, depth): Table 1's four hidden and bottleneck sizes, heads 1..8, all intermediate sizes and FFN counts,
# depth 2..6; 0.08 to 1.3 GFLOPs per sequence (16x). Ordered so that any prefix spreads size: small, large, ...
STUDENTS = (
    ("Model_128_64_1_384_2", 2),
    ("Model_512_128_4_512_4", 4),  # MobileBERT's block: the pipeline's baseline
    ("Model_256_128_4_512_2", 4),  # the demo student
    ("Model_128_160_8_640_4", 5),
    ("Model_512_64_1_640_2", 2),
    ("Model_256_96_2_384_6", 6),
    ("Model_384_96_2_384_4", 3),
    ("Model_384_160_4_512_2", 5),
    ("Model_128_128_2_512_6", 3),
    ("Model_256_64_8_640_4", 2),
)
PROBE_ROWS = 2000  # the probe's train rows unless recipe.probe.max_train_examples says otherwise
# Latency here only spreads the students: timed beside other work, not flagged, kept out of the shared cache.
STUDY = ["latency.max_other_load=null", "latency.max_retries=0", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]  # fmt: skip
QUICK = ["recipe.regular_steps=40", "recipe.flash_fraction=0.5", "recipe.checkpoint_every_n_steps=10",
         "recipe.downstream.max_steps=10", "recipe.teacher_downstream.max_steps=10", "recipe.probe.max_train_examples=200", "latency.repeats=5",
         "latency.warmup=1", "latency.rounds=1"]  # fmt: skip


def base_config(out: Path, overrides: list[str]) -> RunConfig:
    """The default pipeline's config (``recipe=autodistill``) with the study's settings and ``overrides``."""
    with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
        cfg = compose("run", overrides=["recipe=autodistill", *STUDY, f"latency.cache_path={out / 'latency.json'}",
                                        *overrides])  # fmt: skip
    return run.to_run_config(cfg, str(out))


def digest(blob: dict, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``blob`` as sorted JSON: what names a config's results."""
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:length]


def stage_key(cfg: RunConfig) -> str:
    """What a stage's results depend on: its whole run config but its dir and the pipeline's search settings (recipe,
    student, teacher, data, task, latency, seed, trainer), hashed. One stage is one run: the ``search`` group (its
    budget, objectives) steers which students a pipeline trains, never how one is trained, and the logger only
    where curves go."""
    blob = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("run_dir", "search", "logger")}
    return digest(blob, 12)


def run_stage(cfg: RunConfig, product: str, recipe_run: Callable[[RunConfig], dict]) -> dict[str, float]:
    """``recipe_run(cfg)`` in ``cfg.run_dir``, or the metrics of an earlier run of the same config there
    (``metrics.json`` + ``product``, and ``stage.json`` holding the same ``stage_key``).

    Raises:
        SystemExit: the dir holds a finished run of another config (other overrides into the same --out).
    """
    run_dir, key = Path(cfg.run_dir), stage_key(cfg)
    record = run_dir / "stage.json"
    if (done := finished(run_dir, product)) is not None:
        if not record.exists() or json.loads(record.read_text())["key"] != key:
            raise SystemExit(f"{run_dir} holds a run with other settings (stage key {key} expected): its results "
                             "would be reused under the wrong settings; pick another --out")  # fmt: skip
        return done
    metrics = recipe_run(cfg)
    write_json_atomic(record, {"key": key})
    return metrics


def teacher_finetune(recipe: AutoDistillConfig) -> FinetuneConfig | None:
    """The pipeline's teacher fine-tuning when its students learn from it (``recipe.downstream_kd``), else None."""
    if not recipe.downstream_kd:
        return None
    return dataclasses.replace(recipe.teacher_downstream or recipe.downstream, model="teacher")


def downstream_tag(recipe: AutoDistillConfig, task: object) -> str:
    """The fine-tuning budget's dir name: ``<max_steps>steps`` or ``<epochs>ep``, the LR, ``-kd`` when students learn
    from the fine-tuned teacher, and a hash of the students' and the teacher's fine-tuning configs and the task, so
    another budget (``recipe.downstream.max_steps=...``) gets its own dirs and reuses the flash and regular runs."""
    ft, teacher = recipe.downstream, teacher_finetune(recipe)
    blob = {"finetune": dataclasses.asdict(ft), "task": dataclasses.asdict(task),
            "teacher": dataclasses.asdict(teacher) if teacher else None}  # fmt: skip
    budget = f"{ft.max_steps}steps" if ft.max_steps is not None else f"{ft.epochs}ep"
    kd = "-kd" if teacher else ""
    return f"{budget}-lr{ft.optimizer['lr']:g}{kd}-{digest(blob, 6)}"


def teacher_stage(cfg: RunConfig, out: Path) -> RunConfig | None:
    """The teacher's fine-tuning run (the pipeline's stage 4 does it first), or None without task KD."""
    teacher = teacher_finetune(cfg.recipe)
    if teacher is None:
        return None
    # its own dir, keyed by its config and the task only: another student budget reuses it
    blob = {"teacher": dataclasses.asdict(teacher), "task": dataclasses.asdict(cfg.task)}
    run_dir = out / "finetune" / f"teacher-{digest(blob, 6)}"
    return dataclasses.replace(cfg, recipe=teacher, run_dir=str(run_dir))


@dataclass
class StudentStages:
    """The run configs of one student's stages: flash (one per seed), regular, fine-tuning of the regular student
    (one per fine-tuning seed)."""

    name: str
    flash: list[RunConfig]
    regular: RunConfig
    finetune: list[RunConfig]


def student_stages(
    cfg: RunConfig,
    block: str,
    depth: int,
    seeds: int,
    out: Path,
    kd_teacher: Path | None = None,
    finetune_seeds: int = 1,
) -> StudentStages:
    """The stages of the student ``<block>x<depth>``: the pipeline's flash and regular recipes with the probe on,
    flash seeds 0..seeds-1, regular at ``cfg.seed``, fine-tuning at ``cfg.seed`` then ``cfg.seed + 1``, ... (
    ``finetune_seeds`` of them; task KD from ``kd_teacher``, a fine-tuned classifier dir, as stage 4 of the pipeline
    does), each in its dir under ``out``: the first fine-tuning in ``<student>``, seed k > 0 in ``<student>-seed<k>``
    (so a study with one seed is unchanged by adding more)."""
    recipe: AutoDistillConfig = cfg.recipe
    probe = recipe.probe if recipe.probe.enabled else ProbeConfig(max_train_examples=PROBE_ROWS)
    flash = dataclasses.replace(recipe.distill_config("flash"), save_student=False, probe=probe)
    regular = dataclasses.replace(recipe.distill_config("regular"), probe=probe)
    assigned = {"student.num_blocks": depth, "student.block": dataclasses.asdict(BlockSpec.from_name(block)),
                "student.blocks": None}  # fmt: skip
    name = f"{block}x{depth}"
    reg_dir = out / "regular" / name
    ft = dataclasses.replace(recipe.downstream, model=str(reg_dir / "student"))
    if kd_teacher is not None:
        ft = dataclasses.replace(ft, task_kd=dataclasses.replace(ft.task_kd, teacher=str(kd_teacher)))
    ft_dir = out / "finetune" / downstream_tag(recipe, cfg.task)
    return StudentStages(
        name,
        [trial_config(cfg, {**assigned, "seed": k}, flash, out / "flash" / name / f"seed{k}") for k in range(seeds)],
        trial_config(cfg, {**assigned, "seed": cfg.seed}, regular, reg_dir),
        [dataclasses.replace(cfg, recipe=ft, seed=cfg.seed + k, run_dir=str(ft_dir / (f"{name}-seed{k}" if k else name)))
         for k in range(finetune_seeds)],  # fmt: skip
    )


def study_student(stages: StudentStages) -> StudentResult:
    """Flash (each seed), regular and fine-tuning (each seed) of one student, each finished stage reused
    (``run_stage``)."""
    flash = [run_stage(c, "metrics.json", distill.run) for c in stages.flash]
    regular = run_stage(stages.regular, "student/model.safetensors", distill.run)
    return StudentResult(stages.name, flash, regular, [run_stage(c, "metrics.json", finetune.run) for c in stages.finetune])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/fidelity"))
    parser.add_argument("--students", type=int, default=8, help=f"the first N of STUDENTS (at most {len(STUDENTS)})")
    parser.add_argument("--seeds", type=int, default=2, help="flash seeds per student (>= 2 for the seed spread)")
    parser.add_argument("--finetune-seeds", type=int, default=1,
                        help="fine-tuning seeds per student (>= 2: the score is their mean, and the table gives the "
                        "seed-to-seed τ, the ceiling of any metric)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of the study")
    args, overrides = parser.parse_known_args()
    if not 1 <= args.students <= len(STUDENTS) or args.seeds < 1 or args.finetune_seeds < 1:
        parser.error(f"--students must be in [1, {len(STUDENTS)}], --seeds and --finetune-seeds >= 1")
    overrides = (QUICK if args.quick else []) + overrides
    out = args.out.resolve()
    cfg = base_config(out, overrides)
    if cfg.recipe.downstream is None:
        parser.error("recipe.downstream=null: the study needs the downstream score")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    ft = cfg.recipe.downstream
    budget = f"{ft.max_steps} steps" if ft.max_steps is not None else f"{ft.epochs} epoch{'s' * (ft.epochs > 1)}"
    title = f"Flash fidelity on {cfg.task.name}: fine-tuning {budget} at lr {ft.optimizer['lr']:g}"
    started, results, text = time.perf_counter(), [], ""
    kd_teacher = None
    if (teacher_cfg := teacher_stage(cfg, out)) is not None:  # the pipeline's stage 4: the teacher first
        console.rule("[bold]teacher[/]: fine-tuning (its students learn from it: task KD)")
        teacher = run_stage(teacher_cfg, "model/model.safetensors", finetune.run)
        console.print(f"teacher: dev {teacher['val/score']:.2f}, test {teacher.get('test/score', float('nan')):.2f}")
        kd_teacher, title = Path(teacher_cfg.run_dir) / "model", f"{title}, task KD from the teacher (dev {teacher['val/score']:.1f})"
    for n, (block, depth) in enumerate(STUDENTS[: args.students], 1):
        t = time.perf_counter()
        console.rule(f"[bold]student {n}/{args.students}[/]: {block}x{depth}")
        stages = student_stages(cfg, block, depth, args.seeds, out, kd_teacher, args.finetune_seeds)
        results.append(study_student(stages))
        console.print(f"{block}x{depth}: {time.perf_counter() - t:.0f} s (finished stages reused)")
        if len(results) >= 3:  # a partial table after every student: a long study can be stopped and read
            for where in (out, out / "finetune" / downstream_tag(cfg.recipe, cfg.task)):  # the latest, and per budget
                text, _ = write_fidelity(where, results, title)
    console.print(text, markup=False, highlight=False)  # the markdown as written ([..](..) is not rich markup)
    probe_s = [m["probe/time_s"] for r in results for m in r.flash if "probe/time_s" in m]
    flash_s = [m["wall_time_s"] for r in results for m in r.flash]
    if probe_s:
        console.print(f"probe: {statistics.mean(probe_s):.1f} s per flash trial (max {max(probe_s):.1f}), "
                      f"{100 * sum(probe_s) / sum(flash_s):.0f}% of the flash trials' wall time")  # fmt: skip
    console.print(f"study: {(time.perf_counter() - started) / 60:.1f} min this run; files in {out}")


if __name__ == "__main__":
    main()
