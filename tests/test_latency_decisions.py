"""Wherever a measured latency feeds a decision or a table, a reading timed on a busy CPU (``latency/contended``)
is left out or flagged: the pre-trial constraint check, recipe=autodistill's report rows and summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from callbacks.latency import LatencyConfig, LatencyResult
from hydra_plugins.pareto_sweeper import SearchResult, TrialRecord
from modules.student_spec import BlockSpec, StudentSpec
from reports.autodistill import Candidate, comparison_rows, summary_metrics
from search import pretrial

BUSY = 272.0  # ms: a tiny student timed while another process loads both cores


def reading(contended: bool) -> LatencyResult:
    p50 = BUSY if contended else 0.33
    return LatencyResult(p50_ms=p50, p50_spread=0.01, p90_ms=p50, mean_ms=p50, std_ms=0.0, cv=0.0,
                         throughput_seq_s=1000 / p50, peak_memory_mb=1.0, noisy=False, attempts=4, device="cpu:x",
                         contended=contended)  # fmt: skip


def test_pre_trial_metrics_flag_a_contended_latency_and_reject_nothing_on_it(monkeypatch) -> None:
    """The hook returns the reading with its flag; the search's invalid_if (the project's default) then
    rejects nothing on it: the trial's own measurement decides after training."""
    from hydra_plugins.pareto_sweeper._ledger import invalid_flags, violations
    from search.config import StudentSearchConfig

    cfg = SimpleNamespace(
        student=StudentSpec(num_blocks=2, block=BlockSpec(32, 16, 2, 32, 1), vocab_size=100, max_position_embeddings=64),
        latency=LatencyConfig(device="cpu", cache_path=None),
    )
    monkeypatch.setattr(pretrial, "measure_latency", lambda config, latency: reading(contended=True))
    busy = pretrial.architecture_metrics(cfg, {"latency/p50_ms", "params"})
    assert busy["params"] == 14752 and busy["latency/contended"] == 1.0  # params still checked
    search = StudentSearchConfig(constraints=[{"name": "latency/p50_ms", "max": 8.0}])
    assert violations(search, busy, partial=True) and invalid_flags(search, busy)  # violated, but flagged
    monkeypatch.setattr(pretrial, "measure_latency", lambda config, latency: reading(contended=False))
    assert pretrial.architecture_metrics(cfg, {"latency/p50_ms"})["latency/p50_ms"] == 0.33


def record(trial, status: str) -> TrialRecord:
    return TrialRecord(trial=trial, kind="trial", name=f"s{trial}", status=status, feasible=status == "ok", value={},
                       assigned={}, overrides=[], objectives={}, metrics={}, error=None, started="", duration_s=1.0)  # fmt: skip


def test_autodistill_report_flags_contended_latency_of_students_baseline_and_teacher() -> None:
    busy, quiet = reading(True).as_metrics(), reading(False).as_metrics()
    base = Candidate("baseline", "base", {"val/mlm_acc": 0.3}, regular={**busy, "val/mlm_acc": 0.4, "params": 1e6})
    student = Candidate("trial 0", "s0", {"val/mlm_acc": 0.3}, regular={**quiet, "val/mlm_acc": 0.5, "params": 1e6})
    teacher = {"name": "t", "params": 2e7, "flops_per_seq@128": 1e9, **busy}
    rows = comparison_rows([base, student], teacher, "sentiment")
    assert not [r for r in rows if f"{BUSY:.2f}" in r]  # the busy reading is shown nowhere as a number
    assert "| contended |" in rows[2] and "| contended |" in rows[-1] and "| 0.33 |" in rows[3]
    result = SearchResult([record(0, "ok"), record(1, "unmeasured")], [], None, 0.0, Path("."))
    metrics = summary_metrics(result, [base, student], teacher, {"regular": float("nan"), "downstream": float("nan")}, 1.0)
    assert "baseline/latency/p50_ms" not in metrics and metrics["baseline/latency/contended"] == 1.0
    assert metrics["trial_0/latency/p50_ms"] == 0.33 and metrics["search/unmeasured"] == 1


def test_a_trial_that_misses_a_constraint_after_training_is_not_counted_ok() -> None:
    """Trained (status ok) but timed slower than the bound after training (feasible false): its own count and
    sentence in the report, never "ok"."""
    import dataclasses

    late = dataclasses.replace(record(2, "ok"), feasible=False, error="violates {'latency/p50_ms': 9.8}")
    result = SearchResult([record(0, "ok"), record(1, "infeasible"), late], [], None, 0.0, Path("."))
    metrics = summary_metrics(result, [], {}, {"regular": float("nan"), "downstream": float("nan")}, 1.0)
    assert metrics["search/ok"] == 1 and metrics["search/trained_infeasible"] == 1 and metrics["search/infeasible"] == 1



def test_sweep_tables_never_show_or_use_a_contended_latency() -> None:
    """The fine-tuning and AdaBERT tables read latency through one rule: a contended reading is shown as
    'contended', left out of medians and plots, and never turned into a ratio."""
    from pathlib import Path

    from reports.adabert_table import AdaBertJob
    from reports.finetune_results import median_latency
    from reports.sweep_table import latency_cell, measured_latency

    quiet = {"latency/p50_ms": 4.0, "latency/contended": 0.0}
    loaded = {"latency/p50_ms": 250.0, "latency/contended": 1.0, "teacher/latency/p50_ms": 900.0,
              "teacher/latency/contended": 1.0}  # fmt: skip
    assert measured_latency(quiet) == 4.0 and measured_latency(loaded) is None
    assert measured_latency(loaded, "teacher/") is None
    assert latency_cell(quiet) == "4.00" and latency_cell(loaded) == "contended"
    assert latency_cell(loaded, "teacher/") == "contended"

    job = AdaBertJob(Path("j"), "sentiment", 4.0, "t", (), ("conv3",), dict(loaded))
    assert job.get("latency/p50_ms") is None and job.get("teacher/latency/p50_ms") is None

    def _cell(metrics: dict):  # median_latency reads only cell.job.metrics
        fake = type("FakeJob", (), {"metrics": metrics})()
        return type("FakeCell", (), {"job": fake})()

    assert median_latency([_cell(quiet), _cell(loaded), _cell({"latency/p50_ms": 6.0})]) == 5.0
    assert median_latency([_cell(loaded)]) is None
