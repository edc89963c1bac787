"""Trials whose metrics are flagged untrustworthy (SearchConfig.invalid_if; the project flags latency measured
on a busy CPU): recorded "unmeasured" with the reason, never told to the optimiser, never on the front or the
plot, not rejected by a pre-trial constraint, and re-run on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.pareto_sweeper import ConstraintConfig, ParetoSearch, Trial, plain
from tests.test_search import (
    SearchConfig,  # the student search with the synthetic app's accuracy objective
    Student,
    small_space,
    synthetic_metrics,
)

FAST = 1e-3  # a contended reading that would dominate everything if it were believed


def contended_launch(calls: list, busy_width: int | None = 256):
    """Synthetic metrics; students ``busy_width`` wide are 'measured under contention' (absurdly fast)."""

    def launch(trial: Trial) -> dict:
        calls.append(trial.index)
        metrics = synthetic_metrics(Student(trial.assigned))
        contended = trial.assigned["student.block"]["hidden_size"] == busy_width
        if contended:
            metrics.update({"latency/p50_ms": FAST, "val/mlm_acc": 10.0, "val/loss": 0.0})
        return {**metrics, "latency/contended": float(contended)}

    return launch


def spy_on_tells(monkeypatch) -> list:
    told: list = []
    make = ParetoSearch._make_optimizer

    def make_and_spy(self):
        opt = make(self)
        tell = opt.tell

        def spying_tell(candidate, losses, *args, **kwargs):
            told.append((getattr(candidate, "value", None), losses))
            return tell(candidate, losses, *args, **kwargs)

        opt.tell = spying_tell
        return opt

    monkeypatch.setattr(ParetoSearch, "_make_optimizer", make_and_spy)
    return told


def ledger(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.smoke
def test_contended_trials_are_unmeasured_never_told_and_never_on_the_front(tmp_path, monkeypatch) -> None:
    told = spy_on_tells(monkeypatch)
    cfg = SearchConfig(optimizer="random", budget=8, space=small_space(), seed=3)
    result = ParetoSearch(cfg, tmp_path, contended_launch([])).run()
    records = ledger(tmp_path)
    unmeasured = [r for r in records if r["status"] == "unmeasured"]
    assert unmeasured, "students 256 wide are 'contended': some must have been proposed"
    for r in unmeasured:
        assert r["assigned"]["student.block"]["hidden_size"] == 256 and not r["feasible"] and r["objectives"] == {}
        assert "latency/contended" in r["error"] and "contention" in r["error"]  # why, in the ledger
    assert all(r["status"] != "unmeasured" for r in records if r["assigned"]["student.block"]["hidden_size"] != 256)
    unmeasured_ids = {r["trial"] for r in unmeasured}
    assert not unmeasured_ids & {r.trial for r in result.front}
    front_csv = (tmp_path / "pareto.csv").read_text().splitlines()[1:]
    assert not unmeasured_ids & {int(line.split(",")[0]) for line in front_csv}
    # Nothing of theirs reached the optimiser: not their value, not a penalty in their place.
    unmeasured_values = [json.dumps(r["value"], sort_keys=True) for r in unmeasured]
    told_values = [json.dumps({k: plain(v) for k, v in (value or {}).items()}, sort_keys=True) for value, _ in told]
    assert not set(unmeasured_values) & set(told_values)
    assert all(FAST not in list(losses if isinstance(losses, list) else [losses]) for _, losses in told)
    assert len(told_values) > 1  # the others were told


@pytest.mark.smoke
def test_unmeasured_trials_are_re_run_on_resume_under_their_own_index(tmp_path) -> None:
    cfg = SearchConfig(optimizer="random", budget=6, space=small_space(), seed=3)
    ParetoSearch(cfg, tmp_path, contended_launch([])).run()
    first = {r["trial"] for r in ledger(tmp_path) if r["status"] == "unmeasured"}
    assert first
    calls: list = []
    result = ParetoSearch(cfg, tmp_path, contended_launch(calls, busy_width=None)).run()  # the machine is quiet now
    assert set(calls[: len(first)]) == first  # re-run first, same index
    again = {r.trial: r for r in result.records}
    assert all(again[i].status == "ok" and again[i].metrics["latency/contended"] == 0.0 for i in first)
    assert not [r for r in result.records if r.status == "unmeasured"]


def test_a_contended_pre_trial_latency_rejects_nothing(tmp_path) -> None:
    calls: list = []
    cfg = SearchConfig(optimizer="random", budget=4, space=small_space(), seed=1,
                       constraints=[ConstraintConfig("latency/p50_ms", max=1e6)])  # fmt: skip

    def pretrial(trial: Trial, names: set) -> dict:
        return {"latency/p50_ms": 1e9, "latency/contended": 1.0}  # timed on a busy machine

    result = ParetoSearch(cfg, tmp_path, contended_launch(calls, busy_width=None), pretrial).run()
    assert not [r for r in result.records if r.status == "infeasible"]
    assert len(calls) == 5 and all(r.status == "ok" and r.feasible for r in result.records)  # 4 trials, a repeat


def test_the_sweeper_preset_flags_contended_latency_like_the_search_group() -> None:
    conf = Path(__file__).parents[1] / "conf"
    assert OmegaConf.load(conf / "hydra" / "sweeper" / "pareto.yaml").invalid_if == ["latency/contended"]
    assert OmegaConf.load(conf / "search" / "default.yaml").invalid_if == SearchConfig().invalid_if == ["latency/contended"]
