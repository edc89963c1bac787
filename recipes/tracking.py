"""Weights & Biases bookkeeping that every recipe shares: one W&B run per job or stage, grouped, with its config,
every number of its metrics.json and its report files.

What W&B users expect, and what Lightning's ``WandbLogger`` alone does not give (it reuses any run still open in
the process, so the jobs of a basic-launcher sweep or the stages of a pipeline pile into one run, and it logs no
config unless the module saves hyperparameters):

- ``group``: the sweep (``hydra.sweep.dir``) or the pipeline (its run dir) the job belongs to, unless
  ``logger.group`` names one; ``job_type``: the recipe (``flash_distill``, ``regular_distill``, ``finetune``,
  ``adabert``, ``autodistill``, ``latency``, ``search``); ``name``: the run dir below the group (``search/3``,
  ``finetune/teacher``), unless ``logger.name`` says otherwise.
- The resolved ``RunConfig``, flattened (``student.block.num_heads``), as the run's config, logged when the run
  starts, so a crashed run has it too.
- At the end (``tracked``): metrics.json's numbers in the run's summary, the run dir's report files (``*.md``,
  ``*.png``, ``*.csv``) as a ``report`` artifact, and the run finished (failed, with exit code 1, on an error), so
  the next job in the same process opens its own run.

Only recipes/ imports this, and ``wandb`` is imported only when the logger is W&B.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import netrc
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
# Recipes that run stages of their own, each a W&B run: the job's run dir is the group of them all.
PIPELINES = ("autodistill", "adabert")
REPORT_SUFFIXES = (".md", ".png", ".csv")  # a run dir's top-level files worth keeping beside the run


def wandb_has_credentials() -> bool:
    """True when W&B can log online: an API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL_HOST", "api.wandb.ai")) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` when it says offline or disabled, else online with credentials, else offline: never a login
    prompt in the middle of a run."""
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled"):
        return mode
    return "online" if wandb_has_credentials() else "offline"


def is_wandb(logger_cfg: Any) -> bool:
    """True when ``logger_cfg`` (a dict-like logger config, or None) builds Lightning's ``WandbLogger``."""
    return bool(logger_cfg) and str(logger_cfg.get("_target_", "")) == WANDB_LOGGER


def with_group(logger_cfg: Any, group: str | Path) -> Any:
    """``logger_cfg`` with ``group`` filled in when it is W&B and names no group (a user's ``logger.group`` wins).

    Args:
        group: the sweep or pipeline dir every job of it shares.
    Returns:
        a new dict (the input is not changed), or ``logger_cfg`` itself when there is nothing to fill.
    """
    if not is_wandb(logger_cfg) or logger_cfg.get("group"):
        return logger_cfg
    return {**dict(logger_cfg), "group": str(group)}


def display_path(path: str | Path) -> str:
    """``path`` relative to the working dir when below it (``outputs/2026-11-29/20-01-02``), else absolute: a group
    name a person can read, which ``run_name`` resolves back to the dir."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def run_name(run_dir: str | Path, group: str | None) -> str:
    """The W&B run name of a job in ``run_dir``: its path below the ``group`` dir (``search/3``), else its last two
    path parts (``2026-11-29/20-01-02``): readable in W&B's run table, unique within the group."""
    run_dir = Path(run_dir).resolve()
    if group:
        try:
            below = run_dir.relative_to(Path(group).resolve())
            if below.parts:
                return below.as_posix()
        except ValueError:
            pass
    return "/".join(run_dir.parts[-2:])


def wandb_init_args(logger_cfg: Any, run_dir: str | Path, job_type: str) -> dict[str, Any]:
    """The W&B logger config of one job: ``name`` and ``job_type`` filled in where ``logger_cfg`` leaves them
    null, ``save_dir`` the run dir. ``group`` stays as given (``with_group`` fills it for sweeps and pipelines)."""
    cfg = dict(logger_cfg)
    cfg["name"] = cfg.get("name") or run_name(run_dir, cfg.get("group"))
    cfg["job_type"] = cfg.get("job_type") or job_type
    cfg.setdefault("save_dir", str(run_dir))
    return cfg


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A config (dataclasses, dicts, lists) as one level of dotted keys (``student.block.num_heads``): what W&B's
    run table filters and groups by. Lists stay lists; ``run_dir`` and other paths are strings."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if not isinstance(cfg, dict):
        return {prefix.rstrip("."): cfg}
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value) if isinstance(value, Path) else value
    return flat


def finish_open_run(why: str) -> None:
    """Finish a W&B run this process left open, so the next ``WandbLogger`` starts its own instead of reusing it
    (Lightning reuses ``wandb.run`` when one is open). Nothing when W&B was never imported."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        log.info("W&B: finishing the open run %s (%s)", wandb.run.name, why)
        wandb.run.finish()


def tracked(recipe_run: Callable[[Any], dict[str, float]]) -> Callable[[Any], dict[str, float]]:
    """Decorate a recipe's ``run(cfg) -> metrics``: with a W&B logger, the job's W&B run ends with its metrics as
    the run's summary and its report files as an artifact, and is finished (exit code 1 when ``run`` raised),
    so no later job in this process reuses it. A recipe that trained nothing under W&B (the pipeline, whose
    stages have their own runs; inspect) gets a run of its own for its config, metrics and report. Other loggers:
    ``run`` unchanged."""

    @functools.wraps(recipe_run)
    def run(cfg: Any) -> dict[str, float]:
        if not is_wandb(cfg.logger) or not _rank_zero():
            return recipe_run(cfg)
        finish_open_run(f"a new {cfg.recipe.name} job starts")
        if cfg.recipe.name in PIPELINES:  # its stages' runs (and its own) share its run dir as their group
            cfg = dataclasses.replace(cfg, logger=with_group(cfg.logger, display_path(cfg.run_dir)))
        try:
            metrics = recipe_run(cfg)
        except BaseException:
            _finish(exit_code=1)
            raise
        _close(cfg, metrics)
        return metrics

    return run


def _close(cfg: Any, metrics: dict[str, float]) -> None:
    """Summary, report artifact and finish of the job's run (opened here when the recipe opened none)."""
    import wandb

    run = wandb.run
    if run is None:  # the recipe trained nothing under its own name: a run for its config, metrics and report
        args = wandb_init_args(cfg.logger, cfg.run_dir, cfg.recipe.name)
        run = wandb.init(project=args.get("project"), name=args["name"], group=args.get("group"),
                         job_type=args["job_type"], tags=args.get("tags"), dir=args["save_dir"], mode=wandb_mode(),
                         config=flat_config(cfg))  # fmt: skip
    run.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    files = sorted(p for p in Path(cfg.run_dir).glob("*") if p.is_file() and p.suffix in REPORT_SUFFIXES)
    if files:
        artifact = wandb.Artifact(_artifact_name(run.name or run.id), type="report")
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    run.finish()


def _finish(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=exit_code)


def _artifact_name(run_name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``: ``search/3`` -> ``report-search-3``."""
    return "report-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-")


def _rank_zero() -> bool:
    """Lightning logs on global rank 0 only; the other ranks of a multi-process job have no W&B run to close."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0
