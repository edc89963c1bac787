"""Optuna's engines in the search loop (hydra_plugins/pareto_sweeper/_optuna.py): on a synthetic categorical problem
with a known front, proposals are valid, distinct and feasible, trials in flight are not proposed again, a resume
after a kill continues with the proposals of an uninterrupted run, and failed / NaN trials do not break the GP."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from hydra_plugins.pareto_sweeper import (
    ConstraintConfig,
    ObjectiveConfig,
    ParamSpace,
    ParetoSearch,
    SearchConfig,
    Trial,
)
from hydra_plugins.pareto_sweeper._optuna import OptunaEngine

A, B, C = range(6), ("x", "y", "z"), range(4)  # 72 points: a ordered, b unordered, c ordered
SPACE = ["a=choice(0,1,2,3,4,5)", "b=choice(x,y,z)", "c=choice(0,1,2,3)"]


def objectives(a: int, b: str, c: int) -> tuple[float, float]:
    """Two losses in conflict along a; b != x and c > 0 only make things worse: the front is b=x, c=0, every a."""
    return a + 2.0 * (b != "x") + 0.5 * c, (5 - a) ** 2 / 5 + 1.0 * (b == "z") + 0.3 * c


FRONT = {(a, "x", 0) for a in A}


def config(optimizer: str = "gp", budget: int = 20, **kw) -> SearchConfig:
    return SearchConfig(optimizer=optimizer, budget=budget, seed=kw.pop("seed", 0), space=ParamSpace(params=SPACE),
                        objectives=[ObjectiveConfig("f1", "min", ref=12.0), ObjectiveConfig("f2", "min", ref=10.0)],
                        noise_seeds=0, **kw)  # fmt: skip


def launch_fn(calls: list, fail=lambda v: False, nan=lambda v: False):
    def launch(trial: Trial) -> dict:
        v = (trial.assigned["a"], trial.assigned["b"], trial.assigned["c"])
        calls.append(v)
        if fail(v):
            raise RuntimeError("synthetic failure")
        f1, f2 = objectives(*v)
        return {"f1": math.nan if nan(v) else f1, "f2": f2, "c": v[2]}

    return launch


def ledger_values(sweep: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines()]
    return [(r["value"]["a"], r["value"]["b"], r["value"]["c"]) for r in lines if r["kind"] == "trial"]


@pytest.mark.parametrize("optimizer", ["gp", "tpe"])
def test_proposals_are_valid_distinct_feasible_and_find_the_front(tmp_path, optimizer) -> None:
    calls: list = []
    # c = 3 is over the limit: known before training, so never trained
    cfg = config(optimizer, budget=24, constraints=[ConstraintConfig("c", max=2)])
    result = ParetoSearch(cfg, tmp_path, launch_fn(calls), pretrial=lambda t, names: {"c": t.assigned["c"]}).run()
    values = ledger_values(tmp_path)
    assert all(a in A and b in B and c in C for a, b, c in values)
    assert len(values) == len(set(values))  # never the same point twice, trained or not
    assert len(calls) == len(set(calls)) == 24 and all(c <= 2 for _, _, c in calls)
    infeasible = [r for r in result.records if r.status == "infeasible"]
    assert all(r.value["c"] == 3 for r in infeasible)
    found = {(r.value["a"], r.value["b"], r.value["c"]) for r in result.front}
    # random search draws 24 of the 54 feasible points: ~2.7 of the 6 front points on average
    assert len(found & FRONT) >= (5 if optimizer == "gp" else 4), sorted(found)


@pytest.mark.parametrize("optimizer", ["gp", "tpe"])
def test_points_in_flight_are_not_proposed_again(optimizer) -> None:
    engine = OptunaEngine(optimizer, ParamSpace(params=SPACE), seed=0, objectives=2)
    told = []
    for _ in range(12):  # past the 10 random start-up trials: the model proposes
        c = engine.ask()
        engine.tell(c, list(objectives(*c.value.values())))
        told.append(tuple(c.value.values()))
    batch = [tuple(engine.ask().value.values()) for _ in range(4)]  # 4 workers: all four in flight at once
    assert len(set(batch)) == 4 and not set(batch) & set(told)
    assert sum(t.state.name == "RUNNING" for t in engine.study.trials) == 4


def test_resume_after_a_kill_continues_with_the_same_proposals(tmp_path) -> None:
    uninterrupted = tmp_path / "once"
    ParetoSearch(config(budget=16), uninterrupted, launch_fn([])).run()
    killed = tmp_path / "killed"
    ok = launch_fn([])

    def crash_at_12(trial: Trial) -> dict:
        if trial.index == 12:  # in flight when the process dies (a GP proposal: past the random start)
            raise KeyboardInterrupt
        return ok(trial)

    with pytest.raises(KeyboardInterrupt):
        ParetoSearch(config(budget=16), killed, crash_at_12).run()
    assert len(ledger_values(killed)) == 12
    calls: list = []
    ParetoSearch(config(budget=16), killed, launch_fn(calls)).run()  # re-tells the ledger, re-runs trial 12
    assert ledger_values(killed) == ledger_values(uninterrupted)
    assert len(calls) == 4  # trials 12-15 only: nothing finished before the kill ran again


def test_failed_and_nan_trials_do_not_break_the_model_fit(tmp_path) -> None:
    calls: list = []
    launch = launch_fn(calls, fail=lambda v: v[1] == "y", nan=lambda v: v[1] == "z" and v[2] == 1)
    search = ParetoSearch(config(budget=30), tmp_path, launch)
    result = search.run()
    trials = [r for r in result.records if r.kind == "trial"]
    failed = [r for r in trials if r.status == "failed"]
    assert failed and all(r.value["b"] == "y" or (r.value["b"], r.value["c"]) == ("z", 1) for r in failed)
    assert len(trials) == 30 == len(set(calls))
    ok = [r for r in trials if r.status == "ok"]
    assert len(ok) > 10  # the GP took over after its 10 random start-up trials, failures and all
    # the front is still found: failures told as failures (not as values) leave the GP's fit of the others intact
    assert FRONT <= {(r.value["a"], r.value["b"], r.value["c"]) for r in ok}


def test_the_grid_search_of_the_acquisition_skips_known_points() -> None:
    """Past the start-up trials the GP's acquisition is maximised over the unseen grid: a 12-point space is
    exhausted in 12 proposals with no repeat (Optuna's own local search would propose known points again)."""
    engine = OptunaEngine("gp", ParamSpace(params=["a=choice(1,2,3)", "b=choice(x,y)", "c=range(0,2)"]), 0, 2)
    seen = []
    for _ in range(12):
        c = engine.ask()
        seen.append(tuple(c.value.values()))
        engine.tell(c, [c.value["a"], -c.value["a"] + (c.value["b"] == "x")])
    assert sorted(seen) == sorted(itertools.product((1, 2, 3), ("x", "y"), (0, 1)))
    states = [t.state.name for t in engine.study.trials]
    tenth = [n for n, s in enumerate(states) if s == "COMPLETE"][9]
    assert set(states[tenth:]) == {"COMPLETE"}  # once the GP proposes, no duplicate is asked and discarded


def test_random_start_up_is_a_share_of_a_small_budget() -> None:
    from hydra_plugins.pareto_sweeper._optuna import startup_trials

    assert [startup_trials(b) for b in (None, 300, 20, 6, 2)] == [10, 10, 10, 3, 3]  # the demo's 6: the GP from the 4th
