"""recipe=leaderboard: the table builder on fabricated cells, its config checks, and a tiny two-method run end to end
that resumes without redoing finished work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.leaderboard_config import LeaderboardConfig
from recipes.methods import METHODS, Stage
from reports import leaderboard as report
from tests.test_recipes import run_py, tiny_overrides


def row(method: str, seed: int, score: float, p50: float, params: float, **extra) -> dict:
    values = dict(method=method, seed=seed, model_dir=f"/x/{method}", test_score=score, val_score=score - 1,
                  params=params, params_nonembedding=params / 2, size_mb=params * 4e-6, gflops=params * 1e-7,
                  p50_ms=p50, p50_ms_serving=p50 * 10, throughput=3200 / p50, latency_contended=0.0,
                  wall_time_s=60.0)  # fmt: skip
    return {**values, **extra}


ROWS = [
    row("teacher", 0, 86.0, 28.0, 22.7e6), row("teacher", 1, 85.0, 28.0, 22.7e6),
    row("fast", 0, 80.0, 7.0, 10e6), row("fast", 1, 78.0, 7.0, 10e6),
    row("dominated", 0, 79.0, 9.0, 12e6),  # slower and worse than "fast"
    row("accurate", 0, 84.0, 14.0, 19e6),
]


def test_lines_average_seeds_take_ratios_against_the_teacher_and_find_the_front() -> None:
    lines = {line.method: line for line in report.build_lines(ROWS)}
    fast, teacher = lines["fast"], lines["teacher"]
    assert fast.values["test_score"] == pytest.approx(79.0) and fast.score_spread == pytest.approx(2.0)
    assert teacher.values["test_score"] == pytest.approx(85.5) and lines["accurate"].score_spread is None
    assert fast.speedup == pytest.approx(4.0) and fast.compression == pytest.approx(2.27)
    assert fast.score_ratio == pytest.approx(100 * 79.0 / 85.5)
    assert {m for m, line in lines.items() if line.on_front} == {"teacher", "fast", "accurate"}


def test_report_writes_table_csv_plots_and_the_missing_methods(tmp_path) -> None:
    metrics = report.write_report(tmp_path, ROWS, {"rpp": "pruning lands with issue 19"}, "Budget: tiny.")
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Budget: tiny." in md and "- rpp: pruning lands with issue 19" in md
    assert "| ★ fast | 0,1 | 79.00 | 2.00 |" in md and "| dominated |" in md and "★ dominated" not in md
    assert "Front, fastest first: fast, accurate, teacher." in md
    assert len((tmp_path / "leaderboard.csv").read_text().splitlines()) == 1 + len(ROWS)
    assert (tmp_path / "leaderboard_latency.png").stat().st_size > 0
    assert (tmp_path / "leaderboard_compression.png").stat().st_size > 0
    assert metrics["fast/speedup"] == pytest.approx(4.0) and metrics["dominated/on_front"] == 0.0


def test_cli_rebuilds_the_table_from_cell_dirs(tmp_path) -> None:
    for r in ROWS:
        cell = tmp_path / "lb" / r["method"] / f"seed{r['seed']}"
        cell.mkdir(parents=True)
        (cell / "row.json").write_text(json.dumps(r))
    assert report.main([str(tmp_path / "lb"), "--out", str(tmp_path / "out")]) == 0
    assert "★ fast" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert report.main([str(tmp_path / "empty")]) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(methods=["nope"]), "unknown method 'nope'"), (dict(methods=[]), "recipe.methods is empty"),
     (dict(methods=["teacher", "teacher"]), "twice"), (dict(seeds=[]), "recipe.seeds"),
     (dict(pretrain_steps=0), "recipe.pretrain_steps"), (dict(student_lr=0), "recipe.student_lr")],
)  # fmt: skip
def test_config_checks_name_the_field(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LeaderboardConfig(**kwargs)


def test_every_method_ends_in_a_model_and_uses_known_stage_kinds() -> None:
    for m in METHODS.values():
        assert m.stages and m.about
        assert all(any(o.startswith(("recipe=", "experiment=")) for o in s.overrides) for s in m.stages)
    with pytest.raises(ValueError, match="kind"):
        Stage("x", "other", ())


TINY_STUDENT = ['student.num_blocks=2', 'student.block.hidden_size=32', 'student.block.bottleneck_size=16', 'student.block.intermediate_size=32', 'student.block.num_heads=2', 'student.block.num_ffn=1']


def leaderboard_overrides(teacher: Path, corpus: Path, tsv: Path, tmp_path: Path) -> list[str]:
    task = [f"task.path={tsv}", "task.format=tsv", "task.text_columns=[text]", "task.label_column=label",
            "task.binarize_at=null", "task.batch_size=16", "task.max_seq_len=16", f"task.cache_dir={tmp_path / 'tcache'}"]  # fmt: skip
    return ["recipe=leaderboard", "recipe.methods=[teacher,mobilebert_baseline]", "recipe.pretrain_steps=30",
            "recipe.student_epochs=3", "recipe.teacher_epochs=6", "recipe.teacher_lr=3e-3", "recipe.student_lr=3e-3",
            "recipe.serving_batch_size=4", "trainer.enable_progress_bar=false",
            "+recipe.extra.mobilebert_baseline=[" + ",".join(f"'{o}'" for o in TINY_STUDENT) + "]",
            *tiny_overrides(teacher, corpus, tmp_path), *task]  # fmt: skip


@pytest.mark.smoke
def test_tiny_leaderboard_runs_end_to_end_and_resumes_without_redoing_cells(
    tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path
) -> None:
    overrides = leaderboard_overrides(tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path)
    proc = run_py(*overrides, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    teacher_row = json.loads((run_dir / "teacher" / "seed0" / "row.json").read_text())
    base_row = json.loads((run_dir / "mobilebert_baseline" / "seed0" / "row.json").read_text())
    assert teacher_row["test_score"] > 70 and base_row["test_score"] is not None  # the tiny task is learnable
    assert base_row["params"] < teacher_row["params"] and base_row["p50_ms"] > 0 and base_row["gflops"] > 0
    assert base_row["params"] < 1e5  # recipe.extra reached the method's stages (2 tiny blocks, not MobileBERT's)
    # the student learned from the fine-tuned teacher (task KD on: the same for every method)
    ft_config = (run_dir / "mobilebert_baseline" / "seed0" / "finetune" / "stage.yaml").read_text()
    assert str(run_dir / "teacher" / "seed0" / "finetune" / "model") in ft_config
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["teacher/speedup"] == pytest.approx(1.0)
    assert metrics["mobilebert_baseline/test_score"] == pytest.approx(base_row["test_score"])
    md = (run_dir / "leaderboard.md").read_text()
    assert "mobilebert_baseline" in md and "Budget per method: 30 optimizer steps" in md

    # Resume: drop the student's row and its fine-tuning; a re-run redoes exactly that stage, nothing else.
    distill_metrics = run_dir / "mobilebert_baseline" / "seed0" / "distill" / "metrics.json"
    teacher_metrics = run_dir / "teacher" / "seed0" / "finetune" / "metrics.json"
    stamps = (distill_metrics.stat().st_mtime_ns, teacher_metrics.stat().st_mtime_ns)
    (run_dir / "mobilebert_baseline" / "seed0" / "row.json").unlink()
    (run_dir / "mobilebert_baseline" / "seed0" / "finetune" / "metrics.json").unlink()
    proc = run_py(*overrides, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (distill_metrics.stat().st_mtime_ns, teacher_metrics.stat().st_mtime_ns) == stamps
    assert (run_dir / "mobilebert_baseline" / "seed0" / "row.json").exists()


def test_a_stage_that_cannot_run_fails_before_any_training(tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path) -> None:
    overrides = [o for o in leaderboard_overrides(tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path)
                 if not o.startswith("recipe.pretrain_steps")]  # fmt: skip
    proc = run_py(*overrides, "recipe.pretrain_steps=3", cwd=tmp_path)
    assert proc.returncode == 1
    assert "leaderboard method mobilebert_baseline, stage distill" in proc.stderr and "recipe.regular_steps=3" in proc.stderr
    assert not (tmp_path / "run" / "teacher" / "seed0" / "finetune" / "metrics.json").exists()  # nothing trained


def test_every_method_stage_composes_into_a_valid_run_config(tmp_path) -> None:
    """Each stage's overrides (presets, placeholders filled, the shared budget) compose and pass every schema check."""
    from hydra import initialize_config_dir

    import run
    from recipes.leaderboard import shared_overrides, stage_config

    run.register_recipe_schemas(None)
    recipe = LeaderboardConfig()
    with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
        for m in METHODS.values():
            cell = prev = tmp_path / m.name / "seed0"
            for stage in m.stages:
                values = {"cell": cell, "prev": prev, "teacher": tmp_path / "teacher", "method": m.name}
                cfg = stage_config(None, recipe, stage, 3, [], values, cell / stage.name)
                assert cfg.seed == 3 and cfg.run_dir == str(cell / stage.name)
                if stage.kind == "finetune":  # the shared budget won over the presets' own
                    assert cfg.recipe.epochs == recipe.student_epochs and cfg.recipe.optimizer["lr"] == recipe.student_lr
                    assert cfg.recipe.task_kd.teacher == str(tmp_path / "teacher")
                if stage.kind == "pretrain":
                    assert cfg.recipe.regular_steps == recipe.pretrain_steps
                if "{prev}" in " ".join(stage.overrides):
                    assert str(prev) in cfg.recipe.model
                assert shared_overrides(stage, recipe) or stage.kind == "pipeline"
                prev = cell / stage.name
