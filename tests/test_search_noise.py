"""Noise floors: epsilon-dominance against a naive reading, floors from seed repeats and from each trial's own
latency spread (with its unit), noise.json kept across a crash with no repeat run twice, repeats outside the
budget and never told, the selection that ignores differences below the floors, the report's sentences and
the plots' error bars. Fabricated ledgers and fake launches: nothing is trained."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from callbacks.latency import summarise
from hydra_plugins.pareto_sweeper import (
    ObjectiveConfig,
    ParetoSearch,
    Trial,
    TrialRecord,
    check_metric_names,
    distinguishable,
    dominates,
    eps_dominates,
    measure_floors,
    non_dominated,
)
from hydra_plugins.pareto_sweeper._front import search_result
from hydra_plugins.pareto_sweeper._reports import plot_front
from recipes.autodistill import AutoDistillConfig, select
from reports.autodistill import Candidate, plot_flash_vs_regular, summary_metrics, within_noise, write_report
from tests.test_search import (  # SearchConfig: val/mlm_acc objective
    SearchConfig,
    Student,
    small_space,
    sweep_cmd,
    synthetic_metrics,
)

ACC, LAT = "val/mlm_acc", "latency/p50_ms"




def record(trial, acc: float, lat: float, kind: str = "trial", spread: float = 0.0, status: str = "ok",
           value: dict | None = None) -> TrialRecord:  # fmt: skip
    metrics = {ACC: acc, LAT: lat, "latency/p50_spread": spread}
    return TrialRecord(trial=trial, kind=kind, name=f"s{trial}", status=status, feasible=status == "ok",
                       value=value or {}, assigned={}, overrides=[], objectives={ACC: acc, LAT: lat} if status == "ok" else {},
                       metrics=metrics, error=None, started="", duration_s=1.0)  # fmt: skip


def repeat(source, k: int, acc: float, lat: float, status: str = "ok") -> TrialRecord:
    return record(f"{source}_seed{k}", acc, lat, "repeat", status=status, value={"repeat_of": str(source), "repeat": k})


# ---- the maths ---------------------------------------------------------------------------------
def test_a_gain_below_the_floor_does_not_dominate_and_one_above_does() -> None:
    eps = [0.004, 0.2]  # losses: (-accuracy, latency ms)
    assert not eps_dominates([-0.176, 9.9], [-0.176, 10.0], eps)  # faster by 0.1 ms < 0.2: a tie
    assert eps_dominates([-0.176, 9.7], [-0.176, 10.0], eps)  # faster by 0.3 ms > 0.2
    # worse by less than the floor on accuracy, faster beyond it: dominates (the accuracy gap is noise)
    assert eps_dominates([-0.173, 9.0], [-0.176, 10.0], eps) and dominates([-0.176, 10.0], [-0.173, 11.0])
    assert not eps_dominates([-0.170, 9.0], [-0.176, 10.0], eps)  # worse by 0.006 > 0.004: a real trade-off
    assert not eps_dominates([-0.176, 10.0], [-0.173, 9.0], eps)  # never both ways
    # within noise everywhere: neither removes the other
    assert not eps_dominates([-0.176, 10.0], [-0.174, 10.1], eps) and not eps_dominates([-0.174, 10.1], [-0.176, 10.0], eps)


def test_zero_floors_are_strict_dominance_and_the_distinguishable_front_is_within_the_front() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = rng.integers(0, 8, size=(20, 2)).astype(float).tolist()
        front = non_dominated(pts)
        for a in pts[:6]:
            for b in pts[:6]:
                assert eps_dominates(a, b, [0, 0]) == dominates(a, b)
        assert distinguishable(pts, front, [[0, 0]] * len(pts)) == front
        eps = rng.uniform(0, 3, size=(20, 2)).tolist()
        kept = distinguishable(pts, front, eps)
        assert kept and set(kept) <= set(front)
        naive = [i for i in front if not any(
            all(q <= p + (ei + ej) / 2 for q, p, ei, ej in zip(pts[j], pts[i], eps[i], eps[j]))
            and any(q < p - (ei + ej) / 2 for q, p, ei, ej in zip(pts[j], pts[i], eps[i], eps[j]))
            for j in front if j != i)]  # fmt: skip
        assert kept == (naive or front)


# ---- floors ------------------------------------------------------------------------------------
def test_seed_floor_is_the_spread_of_the_repeats_scaled() -> None:
    records = [record("baseline", 0.170, 10.0, "baseline"), repeat("baseline", 1, 0.174, 10.0), record(0, 0.2, 5.0)]
    floors = measure_floors(SearchConfig(), records)
    acc = floors.floors[ACC]
    assert acc.method == "seeds" and acc.floor == pytest.approx(0.004) and acc.values == [0.170, 0.174]
    assert acc.runs == ["baseline", "baseline_seed1"] and "2 runs of the baseline" in acc.detail
    assert measure_floors(SearchConfig(noise_scale=2.0), records).floors[ACC].floor == pytest.approx(0.008)
    three = [*records, repeat("baseline", 2, 0.168, 10.0), repeat("baseline", 3, 0.2, 10.0, status="failed")]
    assert measure_floors(SearchConfig(noise_seeds=3), three).floors[ACC].floor == pytest.approx(0.006)  # max - min
    assert measure_floors(SearchConfig(noise_seeds=2), three[:-1]).floors[ACC].values == [0.170, 0.174, 0.168]
    # not measured yet (no repeat finished), or switched off: no floor, dominance stays strict
    assert measure_floors(SearchConfig(), records[:1]).floors[ACC].floor is None
    off = measure_floors(SearchConfig(noise_seeds=0), records).floors[ACC]
    assert off.method == "off" and off.of({ACC: 0.1}) == 0.0
    fixed = SearchConfig(objectives=[ObjectiveConfig(ACC, "max", noise=0.005), ObjectiveConfig(LAT, "min")])
    assert fixed.repeats == 1  # latency has no noise setting here: it is measured by seeds
    assert measure_floors(fixed, records).floors[ACC].floor == 0.005


def test_latency_floor_is_each_trials_own_round_spread_in_ms() -> None:
    # callbacks/latency.py's own definition: p50_spread = (max - min) / median of the round medians, a fraction
    rounds = [[9.8] * 5, [10.0] * 5, [10.3] * 5]
    stats = summarise(rounds, batch_size=1)
    r = record(0, 0.2, stats["p50_ms"], spread=stats["p50_spread"])
    floor = measure_floors(SearchConfig(), [r]).floors[LAT]
    assert floor.method == "metric" and floor.relative
    assert floor.of(r.metrics) == pytest.approx(10.3 - 9.8)  # ms: the spread of the round medians, not 0.05
    other = record(1, 0.2, 20.0, spread=0.01)  # 0.2 ms
    floors = measure_floors(SearchConfig(), [r, other])
    assert floors.pair(LAT, r.metrics, other.metrics) == pytest.approx((0.5 + 0.2) / 2)
    assert floors.floors[LAT].per_trial == pytest.approx({"0": 0.5, "1": 0.2})
    assert floors.floors[LAT].floor == pytest.approx(0.35)  # the median, for the report
    with pytest.raises(ValueError, match="noise_relative needs noise to name a metric"):
        ObjectiveConfig(LAT, "min", noise=None, noise_relative=True)
    with pytest.raises(ValueError, match="noise must be a floor >= 0"):
        ObjectiveConfig(ACC, "max", noise=-0.1)


# ---- the loop: repeats outside the budget, never told, kept across a crash ------------------------
def seeded_launch(calls: list, crash_at=None):
    """Synthetic metrics whose accuracy moves with the seed (as a real distillation's would)."""

    def launch(trial: Trial) -> dict:
        if trial.index == crash_at:
            raise KeyboardInterrupt  # the search itself stops, as on a kill
        calls.append(trial.index)
        student = Student(trial.assigned) if trial.kind != "baseline" else Student(BASE)
        metrics = synthetic_metrics(student)
        metrics[ACC] += 0.003 * trial.assigned.get("seed", 0)
        return {**metrics, "latency/p50_spread": 0.02}

    return launch


BASE = {"student.num_blocks": 2, "student.blocks": None, "student.block": {
    "hidden_size": 256, "bottleneck_size": 64, "num_heads": 2, "intermediate_size": 384, "num_ffn": 2}}  # fmt: skip


def baseline() -> Trial:
    return Trial("baseline", "baseline", "base", {}, dict(BASE), [])


@pytest.mark.parametrize("crash_at", [2, "baseline_seed1"])
@pytest.mark.smoke
def test_repeats_are_outside_the_budget_and_survive_a_crash_without_running_twice(tmp_path, crash_at, monkeypatch) -> None:
    told: list = []
    tell = ParetoSearch._tell
    monkeypatch.setattr(ParetoSearch, "_tell", lambda self, opt, cand, rec, **kw: (told.append(rec), tell(self, opt, cand, rec, **kw)))
    cfg = SearchConfig(optimizer="random", budget=4, space=small_space(), seed=2)
    calls: list = []
    with pytest.raises(KeyboardInterrupt):
        ParetoSearch(cfg, tmp_path, seeded_launch(calls, crash_at), baseline=baseline(), base_seed=7).run()
    before = json.loads((tmp_path / "noise.json").read_text()) if crash_at == 2 else None
    resumed: list = []
    result = ParetoSearch(cfg, tmp_path, seeded_launch(resumed), baseline=baseline(), base_seed=7).run()
    launched = calls + resumed
    assert launched.count("baseline_seed1") == 1 and launched.count("baseline") == 1
    assert sum(isinstance(i, int) for i in launched) == 4  # the budget: trials only
    assert ("baseline_seed1" in resumed) == (crash_at == "baseline_seed1")  # re-launched only if it was in flight
    (rep,) = [r for r in result.records if r.kind == "repeat"]
    assert rep.assigned["seed"] == 8 and rep.value == {"repeat_of": "baseline", "repeat": 1}
    assert all(r is None or r.kind == "trial" for r in told)  # the baseline and the repeat: never told
    noise = json.loads((tmp_path / "noise.json").read_text())["objectives"]
    assert noise[ACC]["floor"] == pytest.approx(0.003 * 8) and noise[ACC]["runs"] == ["baseline", "baseline_seed1"]
    assert noise[LAT]["method"] == "metric" and len(noise[LAT]["per_trial"]) == 5  # the baseline and 4 trials
    if before is not None:
        assert before["objectives"][ACC] == noise[ACC]  # kept from the ledger, not measured again
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in ledger] == ["baseline", "repeat", "trial", "trial", "trial", "trial"]


@pytest.mark.smoke
def test_without_a_baseline_the_first_ok_trial_is_repeated_and_noise_seeds_0_repeats_nothing(tmp_path) -> None:
    calls: list = []
    ParetoSearch(SearchConfig(optimizer="random", budget=3, space=small_space(), seed=2), tmp_path / "a",
                 seeded_launch(calls)).run()  # fmt: skip
    assert calls == [0, "0_seed1", 1, 2]  # the repeat right after the first ok trial, before further trials
    # a resume may change the noise settings (they re-judge the same ledger): more seeds run only the missing repeat
    more = SearchConfig(optimizer="random", budget=3, space=small_space(), seed=2, noise_seeds=2, noise_scale=2.0)
    calls = []
    result = ParetoSearch(more, tmp_path / "a", seeded_launch(calls)).run()
    assert calls == ["0_seed2"] and result.noise.floors[ACC].floor == pytest.approx(2 * 0.003 * 2)
    calls = []
    off = SearchConfig(optimizer="random", budget=3, space=small_space(), seed=2, noise_seeds=0)
    result = ParetoSearch(off, tmp_path / "b", seeded_launch(calls)).run()
    assert calls == [0, 1, 2] and result.noise.floors[ACC].method == "off"


# ---- selection, report, plots --------------------------------------------------------------------
def fabricated_result(tmp_path: Path):
    """The baseline and a repeat (accuracy floor 0.004); A and B within noise on accuracy, B faster beyond noise;
    C a real trade-off (much less accurate, much faster)."""
    records = [
        record("baseline", 0.170, 12.0, "baseline", spread=0.01),
        repeat("baseline", 1, 0.174, 12.0),
        record(0, 0.176, 10.0, spread=0.01),  # A: 0.1 ms floor
        record(1, 0.173, 9.0, spread=0.01),  # B: 0.09 ms
        record(2, 0.150, 5.0, spread=0.01),  # C
    ]
    return search_result(SearchConfig(), records, None, tmp_path)


def test_selection_ignores_a_lead_below_the_noise_floor(tmp_path) -> None:
    result = fabricated_result(tmp_path)
    assert [r.trial for r in result.front] == [0, 1, 2]  # strict: A's 0.003 accuracy lead keeps it there
    assert [r.trial for r in result.distinguishable] == [1, 2]  # but 0.003 < 0.004: B (faster) beats it
    for k in (1, 2, 3):
        chosen = select(result, AutoDistillConfig(max_selected=k), SearchConfig())
        assert 0 not in [r.trial for r in chosen] and len(chosen) == min(k, 2)
    metrics = summary_metrics(result, [], {}, {"regular": float("nan"), "downstream": float("nan")}, 1.0)
    assert metrics[f"noise/{ACC}"] == pytest.approx(0.004) and metrics[f"noise/{LAT}"] == pytest.approx(0.095)  # median: 0.12, 0.1, 0.09, 0.05 ms
    assert metrics["search/front_size"] == 3 and metrics["search/distinguishable"] == 2


def test_report_says_which_compared_students_are_within_noise(tmp_path) -> None:
    result = fabricated_result(tmp_path)
    base = Candidate("baseline", "base", {ACC: 0.175, LAT: 12.0, "latency/p50_spread": 0.01}, regular={ACC: 0.3})
    t1 = Candidate("trial 1", "s1", {ACC: 0.173, LAT: 9.0, "latency/p50_spread": 0.01}, regular={ACC: 0.31})
    t2 = Candidate("trial 2", "s2", {ACC: 0.150, LAT: 8.96, "latency/p50_spread": 0.01}, regular={ACC: 0.2})
    sentences = within_noise([base, t1, t2], SearchConfig(), result.noise)
    assert sentences == [
        "trial 1 and the baseline differ by 0.002 on val/mlm_acc, below its noise floor 0.004: not distinguishable.",
        "trial 1 and trial 2 differ by 0.04 on latency/p50_ms, below its noise floor 0.0898: not distinguishable.",
    ]
    teacher = {"name": "t", "params": 2e7, "flops_per_seq@128": 1e9}
    metrics = summary_metrics(result, [base, t1, t2], teacher, {"regular": float("nan"), "downstream": float("nan")}, 60.0)
    recipe = AutoDistillConfig(downstream=None)
    report = write_report(tmp_path, result, recipe, SearchConfig(), [base, t1, t2], teacher, {"regular": 0.0, "downstream": 0.0}, metrics, "task")
    text = report.read_text()
    assert "| `val/mlm_acc` | 0.004 | spread (max - min) over 2 runs of the baseline" in text
    assert "| `latency/p50_ms` | 0.095 | each trial's own latency/p50_spread x value" in text
    assert sentences[0] in text and "2 of them beaten by no other by more than the noise floors" in text


def test_plots_draw_each_points_floor_as_error_bars(tmp_path) -> None:
    points = [(10.0, 0.176), (9.0, 0.173), (5.0, 0.150)]
    floors = [(0.1, 0.004), (0.09, 0.004), (0.05, 0.004)]
    fig = plot_front(tmp_path / "p.png", points, [0, 1, 2], ("x", "y"), baseline=(12.0, 0.170), directions=("min", "max"),
                     floors=floors, baseline_floor=(0.12, 0.004), within_noise=[0])  # fmt: skip
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    segments = [seg for lines in bars.lines[2] for seg in lines.get_segments()]
    widths = sorted(round(abs(s[1][0] - s[0][0]), 6) for s in segments if s[0][1] == s[1][1])
    heights = sorted(round(abs(s[1][1] - s[0][1]), 6) for s in segments if s[0][0] == s[1][0])
    assert widths == [0.05, 0.09, 0.1, 0.12] and heights == [0.004] * 4  # each bar spans its floor
    assert any("beaten beyond noise" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    base = Candidate("baseline", "b", {ACC: 0.17}, regular={ACC: 0.3})
    fig = plot_flash_vs_regular([base, Candidate("trial 1", "s", {ACC: 0.18}, regular={ACC: 0.31})],
                                tmp_path / "f.png", lambda m: 0.004)  # fmt: skip
    assert len([c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]) == 2


# ---- mistakes refused before any trial -----------------------------------------------------------
@pytest.mark.smoke
def test_a_misspelt_noise_metric_or_seed_key_is_refused_before_any_trial(tmp_path) -> None:
    cfg = SearchConfig(objectives=[ObjectiveConfig(LAT, "min", noise="latency/p50_sprd", noise_relative=True)])
    with pytest.raises(ValueError, match=r"objectives \(latency/p50_ms\).noise: 'latency/p50_sprd' is not a metric.*"
                                         r"did you mean latency/p50_spread"):
        check_metric_names(cfg, [LAT, "latency/p50_spread"], "test")
    proc = subprocess.run(sweep_cmd(tmp_path, "hydra.sweeper.budget=2", "hydra.sweeper.seed_key=random_seed"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "seed_key=random_seed: the trial config has no such key" in proc.stderr
    assert "hydra.sweeper.noise_seeds=0" in proc.stderr and not (tmp_path / "calls").exists()
