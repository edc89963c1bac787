"""The pieces the search refactor split apart: the student space (search/space.py) against the plugin's
space protocol, the generic plugin with a space that is not a student, and the project's sweeper preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nevergrad as ng
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.pareto_sweeper import (
    ObjectiveConfig,
    ParamSpace,
    ParetoSearch,
    SearchConfig,
    SearchSpace,
    Trial,
    parametrization,
    to_overrides,
)
from modules.student_spec import BLOCK_FACTORS, BlockSpec, student_name
from search.config import REPORT_COLUMNS, StudentSearchConfig, default_objectives
from search.space import TABLE1, StudentSpace

APP = Path(__file__).parent / "search_app" / "app.py"


# ---- the student space -------------------------------------------------------------------------
def test_student_space_entries_keep_their_names_order_and_types() -> None:
    """The optimiser proposes the same students as before the refactor only if these stay as they are."""
    space = StudentSpace(num_blocks="range(2,5)", params=["recipe.lr=choice(0.1,0.2)"])
    assert isinstance(space, SearchSpace) and tuple(TABLE1) == BLOCK_FACTORS
    param = parametrization(space, seed=0)
    assert list(param.value) == ["num_blocks", *(f"block.{f}" for f in BLOCK_FACTORS), "recipe.lr"]
    kinds = {k: type(p) for k, p in param._content.items()}
    assert kinds["num_blocks"] is ng.p.TransitionChoice and kinds["block.num_ffn"] is ng.p.TransitionChoice
    assert kinds["recipe.lr"] is ng.p.Choice  # two options: unordered
    per_block = parametrization(StudentSpace(num_blocks="choice(2,3)", per_block=True), seed=0)
    assert list(per_block.value)[:2] == ["num_blocks", "block0.hidden_size"] and "block2.num_ffn" in per_block.value
    # the random state is seeded: the same seed proposes the same students
    assert [parametrization(space, 3).sample().value for _ in range(1)] == [
        parametrization(space, 3).sample().value for _ in range(1)
    ]


def test_student_space_parameters_assignments_describe_round_trip() -> None:
    parser = OverridesParser.create()
    for kwargs in ({"num_blocks": "range(2,5)"}, {"num_blocks": "choice(2,3)", "per_block": True}):
        space = StudentSpace(**kwargs, params=["recipe.losses.alpha=choice(0.3,0.5)"])
        param = parametrization(space, seed=1)
        for _ in range(10):
            assigned = space.assignments(param.sample().value)
            blocks = assigned["student.blocks"] or [assigned["student.block"]] * assigned["student.num_blocks"]
            name = student_name([BlockSpec(**b) for b in blocks])
            assert space.describe(assigned) == f"{name} recipe.losses.alpha={assigned['recipe.losses.alpha']!r}"
            parsed = {o.key_or_group: o.value() for o in parser.parse_overrides(to_overrides(assigned))}
            assert parsed == assigned


def test_student_space_from_config_builds_table1_blocks() -> None:
    space = StudentSpace(block={"hidden_size": [128]}, num_blocks=2)  # a partial block: Table 1 for the rest
    assert space.block.hidden_size == [128] and space.block.num_ffn == TABLE1["num_ffn"]
    assert space.max_depth() == 2 and StudentSpace(num_blocks="range(2,7)").max_depth() == 6


def test_table1_has_one_home() -> None:
    import benchmarks.search_algorithms as bench
    import recipes.latency

    assert recipes.latency.TABLE1 is TABLE1 and bench.TABLE1 is TABLE1


# ---- the generic plugin, with a space that is not a student ----------------------------------------
def toy_launch(calls: list):
    def launch(trial: Trial) -> dict:
        calls.append(trial.assigned)
        x, kind = trial.assigned["x"], trial.assigned["kind"]
        return {"score": x if kind == "a" else 1 - x, "cost": x * x}

    return launch


def test_generic_search_over_plain_config_keys(tmp_path) -> None:
    calls: list = []
    cfg = SearchConfig(
        optimizer="random", budget=6, seed=2,
        space={"_target_": "hydra_plugins.pareto_sweeper.ParamSpace", "params": ["x=interval(0,1)", "kind=choice(a,b)"]},
        objectives=[ObjectiveConfig("score", "max"), ObjectiveConfig("cost", "min")], report_columns=["score"],
    )  # fmt: skip
    assert isinstance(cfg.space, ParamSpace)
    result = ParetoSearch(cfg, tmp_path, toy_launch(calls), progress="none").run()
    # 6 trials, then the first one again with seed=1 (the noise floors' repeat: outside the budget)
    assert len(calls) == 7 and all(set(c) == {"x", "kind"} for c in calls[:1] + calls[2:])
    assert calls[1] == {**calls[0], "seed": 1}
    ok = [r for r in result.records if r.status == "ok" and r.kind == "trial"]
    assert len(ok) == 6 and result.front and result.hypervolume > 0
    assert all(r.name == f"x={r.assigned['x']!r} kind='{r.assigned['kind']}'" for r in ok)
    assert (tmp_path / "pareto.csv").read_text().startswith("trial,name,status,feasible,score,cost")


def test_generic_config_has_no_project_defaults() -> None:
    with pytest.raises(ValueError, match="nothing to search"):
        SearchConfig(objectives=[ObjectiveConfig("score")])
    with pytest.raises(ValueError, match="at least one"):
        SearchConfig(space=ParamSpace(params=["x=choice(1,2)"]))
    with pytest.raises(ValueError, match="needs a _target_"):
        SearchConfig(space={"params": ["x=choice(1,2)"]}, objectives=[ObjectiveConfig("score")])


@pytest.mark.smoke
def test_sweeper_generic_schema_searches_command_line_sweeps(tmp_path) -> None:
    """hydra/sweeper=pareto_base: no project preset; the space is the command line's sweeps."""
    proc = subprocess.run(
        [sys.executable, str(APP), "-m", "hydra/sweeper=pareto_base", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         f"calls_dir={tmp_path / 'calls'}", "hydra.sweeper.budget=3", "hydra.sweeper.optimizer=random",
         "hydra.sweeper.objectives=[{name: val/mlm_acc, direction: max}]",
         "student.num_blocks=choice(1,2)", "sleep_s=choice(0.0,0.01)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ledger = [json.loads(line) for line in (tmp_path / "sweep" / "ledger.jsonl").read_text().splitlines()]
    (repeat,) = [r for r in ledger if r["kind"] == "repeat"]  # trial 0 again with seed=1: the noise floor
    ledger = [r for r in ledger if r["kind"] == "trial"]
    assert repeat["assigned"] == {**ledger[0]["assigned"], "seed": 1}
    assert len(ledger) == 3 and all(set(r["assigned"]) == {"student.num_blocks", "sleep_s"} for r in ledger)
    # the ledger's assignments are what each job ran with
    calls = [json.loads(p.read_text()) for p in (tmp_path / "calls").glob("*.json")]
    assert {c["job"]: c["student"]["num_blocks"] for c in calls if c["job"] != -1} == {  # -1: the repeat
        r["trial"]: r["assigned"]["student.num_blocks"] for r in ledger
    }


# ---- the project's presets -----------------------------------------------------------------------
def test_project_sweeper_preset_is_the_search_defaults() -> None:
    """conf/hydra/sweeper/pareto.yaml writes out search/config.py's defaults: they must not drift apart."""
    from hydra import compose, initialize_config_dir

    import run
    from search.pretrial import architecture_metrics

    with initialize_config_dir(config_dir=str(Path(run.__file__).parent / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=["hydra/sweeper=pareto", "recipe=flash_distill"], return_hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    defaults = StudentSearchConfig()
    assert sweeper["_target_"] == "hydra_plugins.pareto_sweeper.sweeper.ParetoSweeper"
    assert StudentSpace(**{k: v for k, v in sweeper["space"].items() if k != "_target_"}) == defaults.space
    assert sweeper["space"]["_target_"] == "search.space.StudentSpace"
    assert [ObjectiveConfig(**o) for o in sweeper["objectives"]] == default_objectives() == defaults.objectives
    assert sweeper["report_columns"] == list(REPORT_COLUMNS) == defaults.report_columns
    module, name = sweeper["pretrial"].split(":")
    assert getattr(__import__(module, fromlist=[name]), name) is architecture_metrics
    assert (sweeper["budget"], sweeper["optimizer"]) == (defaults.budget, defaults.optimizer) == (20, "tpe")


def test_trial_config_rejects_an_unknown_key(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    import run
    from recipes.autodistill import trial_config

    with initialize_config_dir(config_dir=str(Path(run.__file__).parent / "conf"), version_base="1.3"):
        base = run.to_run_config(compose("run"), str(tmp_path))
    with pytest.raises(ValueError, match="recipe.optimiser.lr"):
        trial_config(base, {"recipe.optimiser.lr": 1e-3}, base.recipe.distill_config("flash"), tmp_path)
