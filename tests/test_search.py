"""The multi-objective search: Pareto maths against naive references, the space, the ask/tell loop and
its ledger in-process, and the Hydra sweeper end to end on a synthetic objective (tests/search_app)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.pareto_sweeper import (
    ConstraintConfig,
    ObjectiveConfig,
    ParetoSearch,
    Trial,
    dominates,
    hypervolume,
    hypervolume_curve,
    non_dominated,
    parametrization,
    to_overrides,
)
from hydra_plugins.pareto_sweeper import ObjectiveConfig as _Objective
from search.config import StudentSearchConfig


def SearchConfig(**kwargs) -> StudentSearchConfig:  # noqa: N802  (stands in for the class in these tests)
    """The student search with the synthetic app's accuracy objective (it reports val/mlm_acc, not val/loss)."""
    kwargs.setdefault("objectives", [_Objective("val/mlm_acc", "max"),
                                     _Objective("latency/p50_ms", "min", noise="latency/p50_spread", noise_relative=True)])
    return StudentSearchConfig(**kwargs)


from search.space import BlockSpaceConfig  # noqa: E402
from search.space import StudentSpace as SpaceConfig  # noqa: E402

APP = Path(__file__).parent / "search_app" / "app.py"
sys.path.insert(0, str(APP.parent))
from app import synthetic_metrics  # noqa: E402


# ---- Pareto maths ------------------------------------------------------------------------------
def naive_front(points):
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def test_non_dominated_matches_a_naive_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.integers(0, 6, size=(25, 2)).tolist()  # many ties and duplicates
        expected = [
            i for i, p in enumerate(pts)
            if not any(all(a <= b for a, b in zip(q, p)) and q != p for q in pts)
        ]  # fmt: skip
        assert non_dominated(pts) == expected == naive_front(pts)


def test_hypervolume_2d_matches_grid_count_and_nevergrad_3d() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, size=(12, 2)).tolist()
    ref = [1.0, 1.0]
    # Monte-Carlo-free check: count a fine grid's cells dominated by some point.
    g = (np.arange(400) + 0.5) / 400
    xx, yy = np.meshgrid(g, g)
    covered = np.zeros_like(xx, dtype=bool)
    for x, y in pts:
        covered |= (xx >= x) & (yy >= y)
    assert hypervolume(pts, ref) == pytest.approx(covered.mean(), abs=5e-3)
    # 3-D goes through nevergrad; a single box is exact.
    assert hypervolume([[0.5, 0.5, 0.5]], [1, 1, 1]) == pytest.approx(0.125)
    assert hypervolume([[0.5, 0.5, 0.5], [2, 0, 0]], [1, 1, 1]) == pytest.approx(
        0.125
    )  # outside the ref: nothing
    curve = hypervolume_curve([[0.5, 0.5], None, [0.25, 0.75], [0.9, 0.9]], ref)
    assert curve == pytest.approx([0.25, 0.25, 0.25 + 0.0625, 0.3125])


# ---- the space ---------------------------------------------------------------------------------
def test_table1_space_overrides_parse_and_cover_the_factors() -> None:
    space = SpaceConfig(num_blocks="range(2,5)")
    param = parametrization(space, seed=0)
    parser = OverridesParser.create()
    seen = set()
    for _ in range(40):
        assigned = space.assignments(param.sample().value)
        overrides = parser.parse_overrides(to_overrides(assigned))
        parsed = {o.key_or_group: o.value() for o in overrides}
        assert parsed["student.block"] == assigned["student.block"]
        assert parsed["student.blocks"] is None
        assert 2 <= parsed["student.num_blocks"] <= 4
        seen.add(assigned["student.block"]["hidden_size"])
    assert seen == {128, 256, 384, 512}


def test_per_block_space_uses_only_the_proposed_depth() -> None:
    space = SpaceConfig(
        num_blocks="choice(2,3)", per_block=True, params={"recipe.lr": "tag(log, interval(1e-4, 1e-2))"}
    )
    param = parametrization(space, seed=1)
    for _ in range(20):
        assigned = space.assignments(param.sample().value)
        assert assigned["student.block"] is None
        assert len(assigned["student.blocks"]) == assigned["student.num_blocks"]
        assert 1e-4 <= assigned["recipe.lr"] <= 1e-2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_blocks": "range(0,3)"}, "space.num_blocks"),
        ({"params": {"recipe.lr": "interval(1e-2, 1e-4)"}}, "space.params.recipe.lr"),
        ({"params": {"recipe.lr": "tag(log, interval(0, 1))"}}, "positive start"),
        ({"params": {"recipe.lr": "interval(("}}, "not a Hydra sweep expression"),
        ({"block": None}, "nothing to search"),
        ({"block": {"hidden_size": []}}, "space.block.hidden_size"),
    ],
)
def test_bad_space_fails_naming_the_field(kwargs, match) -> None:
    if isinstance(kwargs.get("block"), dict):
        with pytest.raises(ValueError, match=match):
            BlockSpaceConfig(**kwargs["block"])
        return
    with pytest.raises(ValueError, match=match):
        SpaceConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "nope"}, "optimizer='nope' is unknown"),
        ({"budget": 0}, "budget"),
        ({"objectives": [{"name": "a", "direction": "up"}]}, "direction must be max or min"),
        ({"objectives": [{"name": "a"}, {"name": "a"}]}, "twice"),
        ({"constraints": [{"name": "params"}]}, "give max and/or min"),
    ],
)
def test_bad_search_config_fails_naming_the_field(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SearchConfig(**kwargs)


# ---- the loop, in-process ------------------------------------------------------------------------
class Student:
    """Attribute access over an assignment dict, as the synthetic objective expects."""

    def __init__(self, assigned: dict) -> None:
        self.num_blocks = assigned["student.num_blocks"]
        self.block = _Obj(assigned["student.block"]) if assigned["student.block"] else None
        self.blocks = [_Obj(b) for b in assigned["student.blocks"]] if assigned["student.blocks"] else None


class _Obj:
    def __init__(self, d: dict) -> None:
        self.__dict__.update(d)


def synthetic_launch(calls: list):
    def launch(trial: Trial) -> dict:
        calls.append(trial.key)
        student = Student(trial.assigned)
        if (student.block or student.blocks[0]).num_heads == 1:
            raise RuntimeError("synthetic failure")
        return synthetic_metrics(student)

    return launch


def small_space(**kw) -> SpaceConfig:
    block = BlockSpaceConfig(hidden_size=[128, 256, 384], bottleneck_size=[64, 128], num_heads=[1, 2, 4],
                             intermediate_size=[384, 640], num_ffn=[2, 4])  # fmt: skip
    return SpaceConfig(block=block, num_blocks=2, **kw)


@pytest.mark.parametrize("optimizer", ["bo", "random", "de", "gp", "tpe"])
@pytest.mark.smoke
def test_search_front_is_the_non_dominated_set_and_failures_are_recorded(tmp_path, optimizer) -> None:
    calls: list = []
    cfg = SearchConfig(optimizer=optimizer, budget=10, space=small_space(), seed=3)
    result = ParetoSearch(cfg, tmp_path, synthetic_launch(calls)).run()
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    (repeat,) = [r for r in ledger if r["kind"] == "repeat"]  # the first ok trial, re-seeded: outside the budget
    ledger = [r for r in ledger if r["kind"] == "trial"]
    trained = [r for r in ledger if r["status"] in ("ok", "failed")]
    assert len(trained) == 10 == len(calls) - 1 == len(set(calls)) - 1  # the budget, each student trained once
    assert repeat["trial"] in calls and repeat["assigned"]["seed"] == 1
    failed = [r for r in ledger if r["status"] == "failed"]
    assert failed, "a third of the space fails (one head): some proposals must have"
    assert all(
        r["assigned"]["student.block"]["num_heads"] == 1 and "synthetic failure" in r["error"] for r in failed
    )
    ok = [r for r in ledger if r["status"] == "ok"]
    losses = [[-r["objectives"]["val/mlm_acc"], r["objectives"]["latency/p50_ms"]] for r in ok]
    expected = {ok[i]["trial"] for i in naive_front(losses)}
    assert {r.trial for r in result.front} == expected
    csv_trials = {int(line.split(",")[0]) for line in (tmp_path / "pareto.csv").read_text().splitlines()[1:]}
    assert csv_trials == expected
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    hv = (tmp_path / "hypervolume.csv").read_text().splitlines()[1:]
    values = [float(line.split(",")[-1]) for line in hv]
    assert len(values) == 10 and values == sorted(values) and values[-1] == pytest.approx(result.hypervolume)


@pytest.mark.smoke
def test_constraints_checked_before_training_are_never_trained(tmp_path) -> None:
    calls: list = []
    limit = 2 * 256 * (128 + 640 * 2)  # a 2-block 256-wide student with the biggest FFNs
    cfg = SearchConfig(
        optimizer="random", budget=6, space=small_space(), constraints=[ConstraintConfig("params", max=limit)]
    )

    def pretrial(trial: Trial, names: set) -> dict:
        assert names == {"params"}
        return {"params": synthetic_metrics(Student(trial.assigned))["params"]}

    result = ParetoSearch(cfg, tmp_path, synthetic_launch(calls), pretrial).run()
    infeasible = [r for r in result.records if r.status == "infeasible"]
    assert infeasible, "the space has students over the limit: some must have been proposed"
    trained_keys = set(calls)
    for r in infeasible:
        assert r.metrics["params"] > limit
        assert json.dumps(r.assigned, sort_keys=True) not in trained_keys  # never trained
    assert all(
        r.metrics["params"] <= limit for r in result.records if r.status in ("ok", "failed") and r.metrics
    )
    assert len([r for r in result.records if r.kind == "trial" and r.status in ("ok", "failed")]) == 6


@pytest.mark.smoke
def test_an_exhausted_space_stops_without_training_twice(tmp_path) -> None:
    calls: list = []
    block = BlockSpaceConfig(
        hidden_size=[128, 256], bottleneck_size=[64], num_heads=[2], intermediate_size=[384], num_ffn=[2]
    )
    cfg = SearchConfig(
        optimizer="random", budget=5, space=SpaceConfig(block=block, num_blocks=2), max_proposals=30
    )
    result = ParetoSearch(cfg, tmp_path, synthetic_launch(calls)).run()
    assert len(calls) == len(set(calls)) == 3  # both students, and the first one's seed repeat
    assert [r.kind for r in result.records] == ["repeat", "trial", "trial"]


@pytest.mark.smoke
def test_resume_refuses_a_different_search_in_the_same_dir(tmp_path) -> None:
    ParetoSearch(
        SearchConfig(optimizer="random", budget=2, space=small_space()), tmp_path, synthetic_launch([])
    ).run()
    with pytest.raises(ValueError, match="holds a different search.*objectives"):
        changed = SearchConfig(
            optimizer="random", budget=2, space=small_space(), objectives=[ObjectiveConfig("val/mlm_acc")]
        )
        ParetoSearch(changed, tmp_path, synthetic_launch([])).run()
    # a bigger budget is the same search: it carries on from the ledger
    calls: list = []
    ParetoSearch(
        SearchConfig(optimizer="random", budget=4, space=small_space()), tmp_path, synthetic_launch(calls)
    ).run()
    assert len(calls) == 2


@pytest.mark.smoke
def test_interrupted_search_resumes_in_flight_trial_and_loses_nothing(tmp_path) -> None:
    """A crash inside a trial: the rerun launches the same trial (same index) again, then carries on."""
    calls: list = []
    cfg = SearchConfig(optimizer="bo", budget=6, space=small_space(), seed=1)
    ok_launch = synthetic_launch(calls)

    def crashing(trial: Trial) -> dict:
        if trial.index == 3:
            raise KeyboardInterrupt  # not an Exception: the search itself stops, as on Ctrl-C / a kill
        return ok_launch(trial)

    with pytest.raises(KeyboardInterrupt):
        ParetoSearch(cfg, tmp_path, crashing).run()
    pending = json.loads((tmp_path / "pending.json").read_text())
    assert [p["index"] for p in pending] == [3]
    resumed_calls: list = []
    result = ParetoSearch(cfg, tmp_path, synthetic_launch(resumed_calls)).run()
    assert resumed_calls[0] == Trial(**pending[0]).key  # the in-flight trial first, same settings
    trained = [r for r in result.records if r.kind == "trial" and r.status in ("ok", "failed")]
    assert sorted(int(r.trial) for r in trained) == list(range(6))
    assert len({json.dumps(r.assigned, sort_keys=True) for r in trained}) == 6
    assert len([r for r in result.records if r.kind == "repeat"]) == 1  # run before the crash, kept
    assert len(calls) + len(resumed_calls) == 7  # trials 0-2 and a repeat before, 3-5 after: none run twice


# ---- the Hydra sweeper, end to end ---------------------------------------------------------------
def sweep_cmd(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(APP), "-m", "hydra/sweeper=pareto",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"calls_dir={tmp_path / 'calls'}",
        "hydra.sweeper.space.num_blocks=2",
        "hydra.sweeper.space.block.hidden_size=[128,256,384]", "hydra.sweeper.space.block.num_ffn=[2,4]",
        "hydra.sweeper.space.block.num_heads=[1,2,4]", "hydra.sweeper.pretrial=app:pretrial",
        *extra,
    ]  # fmt: skip


def read_ledger(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines() if line.strip()]


def calls_of(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "calls").glob("*.json"))]


@pytest.mark.smoke
def test_sweeper_runs_constrains_survives_failures_and_writes_the_front(tmp_path) -> None:
    limit = 2 * 256 * (160 + 640 * 4)
    proc = subprocess.run(
        sweep_cmd(tmp_path, "hydra.sweeper.budget=8", "hydra.sweeper.optimizer=random", "fail_heads=1", "nan_heads=2",
                  f"hydra.sweeper.constraints=[{{name: params, max: {limit}}}]",
                  'hydra.sweeper.baseline=["student.block.hidden_size=256","student.block.num_heads=4"]'),  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    ledger = read_ledger(sweep)
    trials = [r for r in ledger if r["kind"] == "trial"]
    trained = [r for r in trials if r["status"] in ("ok", "failed")]
    assert len(trained) == 8
    for r in trained:
        heads = r["assigned"]["student.block"]["num_heads"]
        assert (r["status"] == "failed") == (heads in (1, 2)), r  # raised, or returned NaN
    infeasible = [r for r in trials if r["status"] == "infeasible"]
    assert infeasible and all(r["metrics"]["params"] > limit for r in infeasible)
    called = [c["student"]["block"] for c in calls_of(tmp_path)]
    assert len(called) == 10  # 8 trials + the baseline + its seed repeat; no infeasible student was run
    assert all(2 * b["hidden_size"] * (b["bottleneck_size"] + b["intermediate_size"] * b["num_ffn"]) <= limit
               for b in called)  # fmt: skip
    base = [r for r in ledger if r["kind"] == "baseline"]
    assert len(base) == 1 and base[0]["status"] == "ok" and (sweep / "baseline").is_dir()
    # the noise floor's repeat: the baseline's job again with seed=1, in its own dir, outside the budget
    (rep,) = [r for r in ledger if r["kind"] == "repeat"]
    (job,) = [c for c in calls_of(tmp_path) if c["seed"] == 1]
    assert rep["trial"] == "baseline_seed1" and rep["status"] == "ok" and job["dir"] == str(sweep / "baseline_seed1")
    assert job["student"]["block"] == next(c for c in calls_of(tmp_path) if c["dir"] == str(sweep / "baseline"))["student"]["block"]
    assert json.loads((sweep / "noise.json").read_text())["objectives"]["val/mlm_acc"]["runs"] == ["baseline", "baseline_seed1"]
    ok = [r for r in trials if r["status"] == "ok" and r["feasible"]]
    losses = [[-r["objectives"]["val/mlm_acc"], r["objectives"]["latency/p50_ms"]] for r in ok]
    front_csv = (sweep / "pareto.csv").read_text().splitlines()
    assert {int(line.split(",")[0]) for line in front_csv[1:]} == {
        ok[i]["trial"] for i in naive_front(losses)
    }
    for name in ("pareto.png", "hypervolume.csv", "trials.csv", "search.json", "multirun.yaml"):
        assert (sweep / name).exists(), name
    # each trial's job dir is its index, with Hydra's own record of its overrides
    for r in trained:
        overrides = (sweep / str(r["trial"]) / ".hydra" / "overrides.yaml").read_text()
        assert f"hidden_size:{r['assigned']['student.block']['hidden_size']}" in overrides


@pytest.mark.smoke
def test_sweeper_killed_mid_run_resumes_with_no_duplicate_and_no_lost_trial(tmp_path) -> None:
    cmd = sweep_cmd(tmp_path, "hydra.sweeper.budget=6", "sleep_s=0.6", "hydra.sweeper.seed=5")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    ledger = tmp_path / "sweep" / "ledger.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ledger.exists() and len(read_ledger(tmp_path / "sweep")) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_ledger(tmp_path / "sweep")
    assert 2 <= len(before) < 6, "the kill must land mid-sweep"
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = read_ledger(tmp_path / "sweep")
    trained = [r for r in after if r["kind"] == "trial" and r["status"] in ("ok", "failed")]
    assert sorted(r["trial"] for r in trained) == list(range(6))
    keys = [json.dumps(r["assigned"], sort_keys=True) for r in trained]
    assert len(set(keys)) == 6
    # records finished before the kill are kept as they were, not re-run
    assert all(r in after for r in before)
    runs = [json.dumps({"student.num_blocks": c["student"]["num_blocks"], "student.block": c["student"]["block"],
                        "student.blocks": None, **({"seed": 1} if c["seed"] else {})}, sort_keys=True)
            for c in calls_of(tmp_path)]  # fmt: skip  # a seed repeat is its source's student with seed=1
    repeats = [k for k in set(runs) if runs.count(k) > 1]
    assert len(repeats) <= 1  # at most the one trial (or seed repeat) in flight at the kill ran twice
    finished_before = {json.dumps(r["assigned"], sort_keys=True) for r in before}
    assert not finished_before & set(repeats)
    assert len([r for r in after if r["kind"] == "repeat"]) == 1


@pytest.mark.smoke
def test_sweeper_with_submitit_local_runs_trials_in_parallel(tmp_path) -> None:
    proc = subprocess.run(
        sweep_cmd(tmp_path, "hydra/launcher=submitit_local", "hydra.sweeper.num_workers=2", "hydra.sweeper.budget=4",
                  "hydra.sweeper.optimizer=de", "hydra.launcher.timeout_min=5", "sleep_s=1",
                  "hydra.sweeper.allow_parallel_latency=true"),  # synthetic latency: no timing to spoil  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ledger = read_ledger(tmp_path / "sweep")
    assert len([r for r in ledger if r["kind"] == "trial" and r["status"] in ("ok", "failed")]) == 4
    assert {c["job"] for c in calls_of(tmp_path)} == {0, 1, 2, 3, -1}  # and the seed repeat (its own subdir)
    # each job ran in its own process, and two ran at once (each sleeps 1 s after recording its start)
    names = [p.stem.split("-") for p in (tmp_path / "calls").glob("*.json")]
    assert len({pid for pid, _ in names}) == 5
    starts = sorted(int(t) for _, t in names)
    assert any(b - a < 1e9 for a, b in zip(starts, starts[1:]))
    assert (tmp_path / "sweep" / ".submitit").is_dir()


@pytest.mark.smoke
def test_sweep_expressions_on_the_command_line_join_the_space(tmp_path) -> None:
    proc = subprocess.run(
        sweep_cmd(tmp_path, "hydra.sweeper.budget=4", "hydra.sweeper.optimizer=random", "sleep_s=choice(0.0,0.01)"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ledger = read_ledger(tmp_path / "sweep")
    assert all(r["assigned"]["sleep_s"] in (0.0, 0.01) for r in ledger)
    # and each job really ran with the value its ledger line says (the seed repeat: job -1, in its own subdir)
    by_job = {c["job"]: c["sleep_s"] for c in calls_of(tmp_path)}
    assert {r["trial"]: r["assigned"]["sleep_s"] for r in ledger if r["kind"] == "trial"} == {
        k: v for k, v in by_job.items() if k != -1}
    assert all(any(o.startswith("sleep_s=") for o in r["overrides"]) for r in ledger)


def test_pipeline_applies_assignments_to_a_typed_config(tmp_path) -> None:
    """recipe=autodistill turns a proposal into a run config: the student and any searched key, re-validated."""
    from hydra import compose, initialize_config_dir

    import run
    from modules.student_spec import BlockSpec
    from recipes.autodistill import trial_config

    with initialize_config_dir(config_dir=str(Path(run.__file__).parent / "conf"), version_base="1.3"):
        base = run.to_run_config(compose("run", overrides=["student=per_block"]), str(tmp_path))
    flash = base.recipe.distill_config("flash")
    block = {
        "hidden_size": 384,
        "bottleneck_size": 96,
        "num_heads": 8,
        "intermediate_size": 640,
        "num_ffn": 6,
    }
    cfg = trial_config(base, {"student.num_blocks": 3, "student.block": block, "student.blocks": None,
                              "recipe.optimizer.lr": 1e-3, "seed": 7}, flash, tmp_path / "t")  # fmt: skip
    assert (
        cfg.student.block == BlockSpec(**block) and cfg.student.blocks is None and cfg.student.num_blocks == 3
    )
    assert cfg.recipe.optimizer["lr"] == 1e-3 and cfg.recipe.budget == "flash" and cfg.seed == 7
    assert cfg.run_dir == str(tmp_path / "t") and base.recipe.optimizer["lr"] == 5e-4  # the base is untouched
    with pytest.raises(ValueError, match="not divisible by num_heads=5"):
        trial_config(base, {"student.block": {**block, "num_heads": 5}, "student.blocks": None, "student.num_blocks": 3},
                     flash, tmp_path)  # fmt: skip


def test_wandb_gets_the_objectives_and_hypervolume_per_trial(tmp_path, monkeypatch) -> None:
    from hydra_plugins.pareto_sweeper import log_to_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = SearchConfig(optimizer="random", budget=3, space=small_space())
    result = ParetoSearch(cfg, tmp_path, synthetic_launch([])).run()
    log_to_wandb(result, cfg, {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "test"})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    log_to_wandb(result, cfg, {"_target_": "lightning.pytorch.loggers.CSVLogger"})  # other loggers: nothing
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_shipped_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    import run

    conf = Path(run.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("run", overrides=["hydra/launcher=slurm", "hydra/sweeper=pareto", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)  # fmt: skip
    launcher, sweeper = cfg.hydra.launcher, cfg.hydra.sweeper
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 8 and launcher.tasks_per_node == 8 and launcher.partition == "gpu"
    assert launcher.max_num_timeout == 3
    assert sweeper._target_ == "hydra_plugins.pareto_sweeper.sweeper.ParetoSweeper"
    assert sweeper.optimizer == "tpe" and list(sweeper.space.block.hidden_size) == [128, 256, 384, 512]


def test_overrides_round_trip_any_string_and_structure() -> None:
    parser = OverridesParser.create()
    values = ["1", "true", "null", "1e-3", "a b=c[1]{x}", "it's", "back\\slash", "end\\", "#c", "café ,",
              -3, 2.5e-4, None, True, [1, "2"], {"a": "x y", "b": [1, {"c": None}]}]  # fmt: skip
    for value in values:
        (override,) = parser.parse_overrides(to_overrides({"k": value}))
        assert override.value() == value, value


def test_interval_parameters_are_floats_unless_tagged_int() -> None:
    space = SpaceConfig(
        block=None,
        params=["a=interval(1,8)", "b=tag(int, interval(100, 1000))", "c=tag(log, interval(1e-4, 1e-2))"],
    )
    param = parametrization(space, seed=0)
    for _ in range(20):
        v = space.assignments(param.sample().value)
        assert isinstance(v["a"], float) and 1 <= v["a"] <= 8
        assert isinstance(v["b"], int) and 100 <= v["b"] <= 1000
        assert 1e-4 <= v["c"] <= 1e-2
    with pytest.raises(ValueError, match="student.num_blocks is part of the searched architecture"):
        SpaceConfig(params=["student.num_blocks=choice(2,4)"])


def test_reference_point_takes_explicit_refs_and_fills_the_rest(tmp_path) -> None:
    cfg = SearchConfig(optimizer="random", budget=3, space=small_space(),
                       objectives=[ObjectiveConfig("val/mlm_acc", "max", ref=0.05), ObjectiveConfig("latency/p50_ms", "min")])  # fmt: skip
    result = ParetoSearch(cfg, tmp_path, synthetic_launch([])).run()
    first = next(r for r in result.records if r.status == "ok")
    assert result.reference[0] == pytest.approx(-0.05)  # the explicit ref, in loss space
    assert result.reference[1] == pytest.approx(
        1.5 * first.objectives["latency/p50_ms"]
    )  # 50% worse than the first
    # single objective: failures still get told a penalty once a good trial set the reference
    single = SearchConfig(
        optimizer="random", budget=4, space=small_space(), objectives=[ObjectiveConfig("val/mlm_acc")]
    )
    search = ParetoSearch(single, tmp_path / "single", synthetic_launch([]))
    result = search.run()
    assert result.reference is not None and len(result.reference) == 1


def test_a_constraint_on_a_missing_metric_makes_trials_infeasible(tmp_path) -> None:
    cfg = SearchConfig(
        optimizer="random",
        budget=2,
        space=small_space(),
        constraints=[ConstraintConfig("latency/p50", max=5)],
    )
    result = ParetoSearch(cfg, tmp_path, synthetic_launch([])).run()
    ok = [r for r in result.records if r.status == "ok"]
    assert ok and all(not r.feasible and "missing" in r.error for r in ok)
    assert result.front == []
