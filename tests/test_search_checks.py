"""Search mistakes caught before any trial (misspelt metric names, a missing device, parallel latency on one
machine), a search where every trial failed reported as an error, and failed trials retried on request."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from hydra_plugins.pareto_sweeper import ConstraintConfig, ObjectiveConfig, ParetoSearch, Trial
from hydra_plugins.pareto_sweeper._checks import check_parallel_latency
from search.config import StudentSearchConfig as SearchConfig
from search.metrics import check_accelerator
from tests.test_recipes import autodistill_tiny, run_py
from tests.test_search import small_space, sweep_cmd, synthetic_metrics


def flaky_launch(calls: list, broken: bool):
    """A trial that raises while ``broken`` (as a bad setting would make every trial fail), else returns metrics."""

    def launch(trial: Trial) -> dict:
        calls.append(trial.index)
        if broken:
            raise RuntimeError("CUDA error: no kernel image is available")
        return synthetic_metrics(type("S", (), trial_student(trial))())

    return launch


def trial_student(trial: Trial) -> dict:
    from modules.student_spec import BlockSpec

    return {"block": BlockSpec(**trial.assigned["student.block"]), "blocks": None,
            "num_blocks": trial.assigned["student.num_blocks"]}  # fmt: skip


def ledger(sweep) -> list[dict]:
    return [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines() if line.strip()]


# ---- every trial failed: an error, with the most common reason ---------------------------------
def test_a_search_where_every_trial_failed_raises_the_most_common_error(tmp_path) -> None:
    calls: list = []
    cfg = SearchConfig(optimizer="random", budget=3, space=small_space(), seed=1)
    with pytest.raises(RuntimeError, match=r"all 3 trials failed .*3 of them with: RuntimeError: CUDA error"):
        ParetoSearch(cfg, tmp_path, flaky_launch(calls, broken=True), progress="none").run()
    assert len(calls) == 3 and all(r["status"] == "failed" for r in ledger(tmp_path))  # recorded first
    assert (tmp_path / "trials.csv").exists()


@pytest.mark.smoke
def test_failed_trials_are_retried_on_resume_only_when_asked(tmp_path, caplog) -> None:
    calls: list = []
    cfg = SearchConfig(optimizer="random", budget=3, space=small_space(), seed=1)
    with pytest.raises(RuntimeError, match="all 3 trials failed"):
        ParetoSearch(cfg, tmp_path, flaky_launch(calls, broken=True), progress="none").run()
    first = [(r["trial"], r["assigned"]) for r in ledger(tmp_path)]
    # Fixed, but not asked to retry: the budget is spent, nothing runs, and the error says how to retry.
    with pytest.raises(RuntimeError, match="retry_failed=true"):
        ParetoSearch(cfg, tmp_path, flaky_launch(calls, broken=False), progress="none").run()
    assert len(calls) == 3 and "retry_failed=true runs them again" in caplog.text
    # Asked: the same trials run again under their own index, and succeed.
    retry = SearchConfig(optimizer="random", budget=3, space=small_space(), seed=1, retry_failed=True)
    result = ParetoSearch(retry, tmp_path, flaky_launch(calls, broken=False), progress="none").run()
    # then the first ok trial's seed repeat (no repeat finished while every trial failed)
    assert calls[3:] == [0, 1, 2, "0_seed1"] and "retrying 3 failed trial(s)" in caplog.text
    again = ledger(tmp_path)
    assert [r["trial"] for r in again if r["kind"] == "repeat"] == ["0_seed1"]
    again = [r for r in again if r["kind"] == "trial"]
    assert [(r["trial"], r["assigned"]) for r in again] == first and all(r["status"] == "ok" for r in again)
    assert result.front


# ---- metric names, device and parallel latency: refused before any trial -------------------------
@pytest.mark.smoke
def test_sweeper_refuses_misspelt_objective_and_constraint_before_any_trial(tmp_path) -> None:
    proc = subprocess.run(
        sweep_cmd(tmp_path, "hydra.sweeper.budget=2",
                  "hydra.sweeper.objectives=[{name: val/mlm_accc, direction: max}]",
                  "hydra.sweeper.constraints=[{name: param, max: 1e9}]"),  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "'val/mlm_accc' is not a metric the trials report (did you mean val/mlm_acc" in proc.stderr
    assert "hydra.sweeper.constraints: 'param' is not a metric" in proc.stderr
    assert not (tmp_path / "calls").exists()  # no trial ran


@pytest.mark.smoke
def test_sweeper_refuses_parallel_local_trials_with_a_latency_objective(tmp_path) -> None:
    args = ("hydra/launcher=submitit_local", "hydra.sweeper.num_workers=2", "hydra.sweeper.budget=2")
    proc = subprocess.run(sweep_cmd(tmp_path, *args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "['latency/p50_ms'] would be timed while another trial trains" in proc.stderr
    assert "hydra.sweeper.allow_parallel_latency=true" in proc.stderr and "num_workers=1" in proc.stderr
    assert not (tmp_path / "calls").exists()


def test_parallel_latency_check_decides_by_launcher_metric_and_opt_in() -> None:
    lat = SearchConfig(num_workers=2)  # the default objectives: val/mlm_acc and latency/p50_ms
    with pytest.raises(ValueError, match="LocalLauncher runs trials side by side"):
        check_parallel_latency(lat, "LocalLauncher", local=True, allow=False)
    check_parallel_latency(lat, "LocalLauncher", local=True, allow=True)  # opted in
    check_parallel_latency(lat, "SlurmLauncher", local=False, allow=False)  # each trial on its own node
    check_parallel_latency(SearchConfig(num_workers=1), "LocalLauncher", local=True, allow=False)
    acc_only = SearchConfig(num_workers=2, objectives=[ObjectiveConfig("val/mlm_acc")])
    check_parallel_latency(acc_only, "LocalLauncher", local=True, allow=False)
    with pytest.raises(ValueError, match="latency/p90_ms"):  # a latency constraint counts too
        check_parallel_latency(SearchConfig(num_workers=2, objectives=[ObjectiveConfig("val/mlm_acc")],
                                            constraints=[ConstraintConfig("latency/p90_ms", max=5)]),
                               "LocalLauncher", local=True, allow=False)  # fmt: skip


@pytest.mark.smoke
def test_autodistill_refuses_a_misspelt_constraint_before_any_trial(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    proc = run_py(*autodistill_tiny(tiny_teacher_dir, pairs_corpus, tmp_path),
                  "search.constraints=[{name: latency/p50, max: 5}]", cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0
    assert "search.constraints: 'latency/p50' is not a metric the trials report (did you mean" in proc.stderr
    assert not (tmp_path / "run" / "search").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.smoke
def test_autodistill_refuses_a_missing_gpu_before_any_trial(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="trainer.accelerator=gpu but this machine has no CUDA"):
        check_accelerator("gpu")
    check_accelerator("cpu")
    proc = run_py(*autodistill_tiny(tiny_teacher_dir, pairs_corpus, tmp_path), "trainer=gpu", cwd=tmp_path)
    assert proc.returncode != 0 and "this machine has no CUDA device" in proc.stderr
    assert "relax search.constraints" not in proc.stderr
    assert not (tmp_path / "run" / "search").exists()

