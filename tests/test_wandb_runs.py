"""One W&B run per job or stage (recipes/tracking.py), read back from the offline run files: grouped by sweep or
pipeline, job_type = the recipe, the resolved config, every number of metrics.json, the report as an artifact;
a job that fails finishes its run as failed and the next job opens its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from recipes import tracking
from recipes.tracking import flat_config, run_name, with_group
from tests.test_recipes import autodistill_tiny, run_py, tiny_overrides
from tests.wandb_records import read_runs

WANDB = {"_target_": tracking.WANDB_LOGGER, "project": "distill-recipes", "name": None, "group": None}


def test_names_groups_and_flat_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_name(tmp_path / "pipe" / "search" / "3", "pipe") == "search/3"  # below the group dir
    assert run_name(tmp_path / "outputs" / "2026-11-29" / "20-01-02", None) == "2026-11-29/20-01-02"
    assert run_name(tmp_path / "elsewhere" / "x", "pipe") == "elsewhere/x"  # not below the group: last two parts
    assert with_group(WANDB, "sweep")["group"] == "sweep" and WANDB["group"] is None  # a copy
    assert with_group({**WANDB, "group": "mine"}, "sweep")["group"] == "mine"  # the user's group wins
    csv = {"_target_": "lightning.pytorch.loggers.CSVLogger"}
    assert with_group(csv, "sweep") is csv and with_group(None, "sweep") is None
    assert tracking.display_path(tmp_path / "outputs" / "a") == "outputs/a"
    assert tracking._artifact_name("search/3 x") == "report-search-3-x"

    from modules.student_spec import BlockSpec, StudentSpec

    block = BlockSpec.from_name("Model_128_64_2_384_2")
    flat = flat_config({"student": StudentSpec(num_blocks=2, block=block), "run_dir": tmp_path, "tags": ["a"]})
    assert flat["student.num_blocks"] == 2 and flat["student.block.num_heads"] == 2
    assert flat["run_dir"] == str(tmp_path) and flat["tags"] == ["a"]


@dataclass
class Recipe:
    name: str


@dataclass
class Job:  # what tracking reads of a RunConfig
    logger: dict
    recipe: Recipe
    run_dir: str
    seed: int


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no global W&B settings
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_failed_job_finishes_its_run_and_the_next_job_gets_its_own(offline, tmp_path) -> None:
    """Two jobs in one process, as in a basic-launcher sweep: the first fails mid-run, the second succeeds."""
    from recipes.common import build_logger

    def job(run_dir: Path, fail: bool) -> dict[str, float]:
        cfg = Job(logger=WANDB, recipe=Recipe(name="finetune"), run_dir=str(run_dir), seed=1)
        run_dir.mkdir(parents=True)

        @tracking.tracked
        def recipe_run(cfg) -> dict[str, float]:
            logger = build_logger(cfg, cfg.run_dir)
            logger.log_metrics({"train/loss": 1.0}, step=1)
            if fail:
                raise RuntimeError("out of memory")
            (Path(cfg.run_dir) / "report.md").write_text("# report")
            return {"val/score": 80.5, "params": 4.2e6}

        return recipe_run(cfg)

    with pytest.raises(RuntimeError, match="out of memory"):
        job(tmp_path / "sweep" / "0", fail=True)
    assert job(tmp_path / "sweep" / "1", fail=False)["val/score"] == 80.5
    first, second = (read_runs(tmp_path / "sweep" / k) for k in ("0", "1"))
    assert len(first) == 1 and len(second) == 1  # the second job did not write into the first's run
    assert first[0].exit_code == 1 and second[0].exit_code == 0
    assert second[0].job_type == "finetune" and second[0].name.endswith("sweep/1")
    assert second[0].config["seed"] == 1 and second[0].config["recipe.name"] == "finetune"
    assert second[0].summary["val/score"] == 80.5 and second[0].summary["params"] == 4.2e6
    assert second[0].artifacts == [("report-" + second[0].name.replace("/", "-"), "report")]


@pytest.mark.smoke
def test_sweep_jobs_get_one_run_each_in_the_sweep_group(offline, tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """`python run.py -m ... logger=wandb` with the basic launcher: both jobs run in one process."""
    sweep = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path) if not o.startswith(("hydra.run", "student.block.num_heads"))]
    proc = run_py("-m", "recipe=flash_distill", "recipe.regular_steps=200", "student.block.num_heads=1,2",
                  "logger=wandb", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}", *overrides,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "will reuse this run" not in proc.stderr + proc.stdout
    for job, heads in (("0", 1), ("1", 2)):
        (run,) = read_runs(sweep / job)  # one run per job, in the job's dir
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert run.group == str(sweep) and run.job_type == "flash_distill" and run.name == job
        assert run.config["student.block.num_heads"] == heads and run.config["recipe.regular_steps"] == 200
        for key in ("latency/p50_ms", "params", "flops_per_seq@128", "val/loss"):  # every number of metrics.json
            assert run.summary[key] == pytest.approx(metrics[key]), key
        assert run.exit_code == 0


@pytest.mark.slow  # a tiny pipeline: about a minute on 2 cores
def test_pipeline_stages_get_one_run_each_in_the_pipeline_group(offline, tiny_teacher_dir, pairs_corpus, tmp_path):
    proc = run_py(*autodistill_tiny(tiny_teacher_dir, pairs_corpus, tmp_path), "search.budget=1", "logger=wandb",
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    runs = read_runs(run_dir)
    by_name = {r.name: r for r in runs}
    assert len(by_name) == len(runs)  # no two stages in one run
    assert {r.group for r in runs} == {"run"}  # the run dir, relative to the working dir
    kinds = sorted(r.job_type for r in runs)
    # teacher timing is not a training run; search: baseline, its seed repeat, 1 trial; 2 regular; 3 fine-tunings
    assert kinds.count("flash_distill") == 3 and kinds.count("regular_distill") == 2 and kinds.count("finetune") == 3
    assert kinds.count("search") == 1 and kinds.count("autodistill") == 1
    (pipeline,) = (r for r in runs if r.job_type == "autodistill")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert pipeline.summary["search/hypervolume"] == pytest.approx(metrics["search/hypervolume"])
    assert pipeline.artifacts and pipeline.artifacts[0][1] == "report"
    assert by_name["finetune/teacher"].summary["val/score"] == pytest.approx(
        json.loads((run_dir / "finetune" / "teacher" / "metrics.json").read_text())["val/score"])  # fmt: skip
