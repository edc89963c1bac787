"""Entry point: `python run.py [recipe=<name>] [group=option ...] [key=value ...]`, `-m` to sweep.

The recipe table below is the whole list of what can run; each entry names a module under recipes/
with a typed config schema and a `run(cfg) -> metrics dict` function, and conf/recipe/<name>.yaml.
Only the recipe that runs is imported: a recipe's imports (torch, Lightning, plotting) never load for
another one. Hydra still checks each recipe's YAML against its schema at composition, because the
schemas of the recipes that the command line selects are registered before Hydra composes.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from recipes.config import RunConfig, register_configs
from recipes.logs import quiet_libraries
from recipes.tracking import with_group

CONF = Path(__file__).resolve().parent / "conf"


@dataclass(frozen=True)
class RecipeEntry:
    """One row of the recipe table: where the recipe's code and its Hydra schema live.

    Attributes:
        module: dotted module with ``run(cfg: RunConfig) -> dict[str, float]``, imported only when the recipe runs.
        schema: name of the dataclass in ``schema_module`` that conf/recipe/<name>.yaml is validated against.
        about: one line for a reader of this table.
    """

    module: str
    schema: str
    about: str = ""
    schema_module: str = "recipes.schemas"

    def load_module(self) -> ModuleType:
        """Import the recipe's module (its imports load now, not when run.py is imported)."""
        return importlib.import_module(self.module)

    def load_schema(self) -> type:
        """The recipe's config dataclass, from ``schema_module`` (import-light: composing a config, ``--help`` and
        shell completion never load torch). Raises AttributeError if the module lacks it (a stale table)."""
        return getattr(importlib.import_module(self.schema_module), self.schema)


# name -> entry. Add a recipe here and in conf/recipe/.
RECIPES: dict[str, RecipeEntry] = {
    "autodistill": RecipeEntry("recipes.autodistill", "AutoDistillConfig", "search -> select -> regular"),
    "flash_distill": RecipeEntry("recipes.distill", "DistillConfig", "5% of the regular budget"),
    "regular_distill": RecipeEntry("recipes.distill", "DistillConfig", "same code, the full budget"),
    "finetune": RecipeEntry("recipes.finetune", "FinetuneConfig", "GLUE, SQuAD v1.1, local tasks"),
    "adabert": RecipeEntry("recipes.adabert", "AdaBertRecipeConfig", "task-adaptive CNN students by NAS"),
    "inspect": RecipeEntry("recipes.inspect", "InspectConfig", "teacher + student, one forward"),
    "latency": RecipeEntry("recipes.latency", "LatencyRecipeConfig", "measured latency vs params/FLOPs"),
    "export": RecipeEntry("recipes.export", "ExportConfig", "ONNX (+ int8) of a saved model, checked"),
    "leaderboard": RecipeEntry("recipes.leaderboard", "LeaderboardConfig", "every method, one budget, one device",
                               schema_module="recipes.leaderboard_config"),
    "prune": RecipeEntry("recipes.prune", "PruneConfig", "magnitude / RPP / structured pruning on the corpus",
                         schema_module="recipes.prune_config"),
}

log = logging.getLogger("run")

# Hydra flags that point at another primary config: then the default recipe is not run.yaml's.
_CONFIG_FLAGS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def register_recipe_schemas(names: Iterable[str] | None = None) -> None:
    """Register the config schemas (the recipes' and every group's) with Hydra's ConfigStore.

    Args:
        names: the recipes whose schemas to register (their modules are imported); None: every recipe
            in RECIPES (what tests and scripts that compose arbitrary recipes need).

    Raises:
        KeyError: a name that is not in RECIPES.
    """
    chosen = RECIPES if names is None else {name: RECIPES[name] for name in names}
    register_configs({name: entry.load_schema() for name, entry in chosen.items()})


def _default_option(config: Path, group: str) -> str | None:
    """The option a config file's defaults list picks for ``group`` (``- recipe: autodistill``), or None."""
    for item in OmegaConf.load(config).get("defaults", []):
        if isinstance(item, DictConfig):
            for key, value in item.items():
                if str(key).removeprefix("override ").strip("/") == group and value is not None:
                    return str(value)
    return None


def _override_values(override) -> list[str] | None:
    """The option(s) an override selects (``a``, or ``a,b`` in a sweep); None for a glob or a range."""
    value = override.value()
    if value is None and not override.is_delete():
        return []  # experiment=null: no preset
    if override.is_delete() or isinstance(value, Glob):
        return None
    if override.is_sweep_override():
        return list(override.sweep_string_iterator()) if override.is_choice_sweep() else None
    return [str(value)]


def recipes_on_command_line(argv: Sequence[str]) -> set[str] | None:
    """The recipes a ``python run.py ...`` command line can run, read with Hydra's override parser.

    ``recipe=`` (one option or a sweep), else what an ``experiment=`` preset overrides, else run.yaml's
    default. Hydra's own flags (``-m``, ``--cfg job``) are skipped: they do not parse as overrides.

    Returns:
        The recipe names, or None when the command line does not say (a glob sweep, another primary
        config, an unreadable preset): then every schema must be registered.
    """
    if any(arg.split("=")[0] in _CONFIG_FLAGS for arg in argv):
        return None
    parser = OverridesParser.create()
    recipes: list[str] | None = None
    experiments: list[str] = []
    for arg in argv:
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException:
            continue  # a flag or a flag's value, not an override
        if override.key_or_group not in ("recipe", "experiment"):
            continue
        values = _override_values(override)
        if values is None:
            return None
        if override.key_or_group == "recipe":
            recipes = values
        else:
            experiments = values
    if recipes is None:  # the experiment's `override /recipe:` (command line wins over it), else run.yaml's
        found = set()
        for name in experiments:
            preset = CONF / "experiment" / f"{name}.yaml"
            if not preset.exists():
                return None  # Hydra will name the missing option; register everything meanwhile
            found.add(_default_option(preset, "recipe") or _default_option(CONF / "run.yaml", "recipe"))
        recipes = sorted(found) if experiments else [_default_option(CONF / "run.yaml", "recipe")]
    if None in recipes or not set(recipes) <= set(RECIPES):
        return None  # an unknown recipe: let Hydra's composition report it against the full table
    return set(recipes)


def to_run_config(cfg: DictConfig, run_dir: str) -> RunConfig:
    """Validate the composed config (every dataclass's __post_init__) and return typed objects.

    Raises:
        ValueError: recipe.name is not in RECIPES, or a schema's check fails.
    """
    name = cfg.recipe.name
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is not one of {sorted(RECIPES)}")
    run_cfg: RunConfig = OmegaConf.to_object(cfg)
    run_cfg.run_dir = run_dir
    return run_cfg


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra's job: validate the config, run the selected recipe, return its metrics (the sweeper reads them)."""
    hydra_cfg = HydraConfig.get()
    run_cfg = to_run_config(cfg, hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:  # W&B: every job of the sweep in one group, one run each
        run_cfg.logger = with_group(run_cfg.logger, str(Path(hydra_cfg.sweep.dir)))  # as the sweeper names it
    module = RECIPES[cfg.recipe.name].load_module()
    quiet_libraries()  # after the recipe's imports: Lightning sets its log levels when imported
    log.info("recipe %s -> %s", cfg.recipe.name, run_cfg.run_dir)
    return module.run(run_cfg)


if __name__ == "__main__":
    register_recipe_schemas(recipes_on_command_line(sys.argv[1:]))
    main()
else:
    # Imported (tests, benchmarks, notebooks compose any recipe with hydra.compose): every schema.
    register_recipe_schemas()
