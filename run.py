"""Entry point: `python run.py [recipe=<name>] [group=option ...] [key=value ...]`, `-m` to sweep.

The recipe table below is the whole list of what can run; each entry is a module under recipes/
with a typed config schema and a `run(cfg) -> metrics dict` function, and conf/recipe/<name>.yaml.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recipes import adabert as adabert_recipe
from recipes import autodistill as autodistill_recipe
from recipes import distill as distill_recipe
from recipes import finetune as finetune_recipe
from recipes import inspect as inspect_recipe
from recipes import latency as latency_recipe
from recipes.config import RunConfig, register_configs

# name -> (module with `run`, its config schema). Add a recipe here and in conf/recipe/.
RECIPES: dict[str, tuple[ModuleType, type]] = {
    "autodistill": (autodistill_recipe, autodistill_recipe.AutoDistillConfig),  # search -> select -> regular
    "flash_distill": (distill_recipe, distill_recipe.DistillConfig),
    "regular_distill": (distill_recipe, distill_recipe.DistillConfig),  # same code, the full budget
    "finetune": (finetune_recipe, finetune_recipe.FinetuneConfig),  # GLUE, SQuAD v1.1, local tasks
    "adabert": (adabert_recipe, adabert_recipe.AdaBertRecipeConfig),  # task-adaptive CNN students by NAS
    "inspect": (inspect_recipe, inspect_recipe.InspectConfig),
    "latency": (latency_recipe, latency_recipe.LatencyRecipeConfig),
}

register_configs({name: schema for name, (_, schema) in RECIPES.items()})
log = logging.getLogger("run")


def to_run_config(cfg: DictConfig, run_dir: str) -> RunConfig:
    """Validate the composed config (every dataclass's __post_init__) and return typed objects."""
    name = cfg.recipe.name
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is not one of {sorted(RECIPES)}")
    run_cfg: RunConfig = OmegaConf.to_object(cfg)
    run_cfg.run_dir = run_dir
    return run_cfg


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> dict[str, float]:
    # Fast tokenizers warn (and can deadlock) when DataLoader workers fork after they were used.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_cfg = to_run_config(cfg, HydraConfig.get().runtime.output_dir)
    module, _ = RECIPES[cfg.recipe.name]
    log.info("recipe %s -> %s", cfg.recipe.name, run_cfg.run_dir)
    return module.run(run_cfg)


if __name__ == "__main__":
    main()
