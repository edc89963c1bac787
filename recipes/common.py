"""Plain functions every recipe calls: logger, trainer, checkpoints, metrics file. No recipe logic here."""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from core.files import write_json_atomic
from recipes import tracking
from recipes.config import RunConfig, TrainerConfig

log = logging.getLogger(__name__)

def build_logger(cfg: RunConfig, run_dir: str) -> Logger | bool:
    """Instantiate the configured Lightning logger (``cfg.logger``) in the run dir.

    W&B (recipes/tracking.py): one run per job, named after the run dir, ``job_type`` the recipe, in the group
    ``logger.group`` (a sweep's or pipeline's, filled in by run.py / the pipeline); a run this process left open
    is finished first, so this job never writes into another's; the resolved config is logged now, so a crashed
    run has it. It logs offline (runs under ``<run_dir>/wandb``, upload later with ``wandb sync``) when no API key
    is configured, instead of prompting or failing mid-run.

    Returns:
        The logger, or False (Lightning's "no logger") when ``cfg.logger`` is empty.
    """
    if not cfg.logger:
        return False
    logger_cfg = dict(cfg.logger)
    if tracking.is_wandb(logger_cfg):
        logger_cfg = tracking.wandb_init_args(logger_cfg, run_dir, cfg.recipe.name)
        if tracking.wandb_mode() != "online":
            if not logger_cfg.get("offline"):
                log.info(
                    "W&B: no API key found (WANDB_API_KEY / wandb login): logging offline; upload with `wandb sync %s/wandb`",
                    run_dir,
                )
            logger_cfg["offline"] = True
        tracking.finish_open_run(f"{run_dir} starts its own")
    logger_cfg.setdefault("save_dir", run_dir)
    logger = instantiate(logger_cfg)
    if tracking.is_wandb(logger_cfg):
        logger.log_hyperparams(tracking.flat_config(cfg))
    return logger


def build_trainer(
    cfg: TrainerConfig, run_dir: str, logger: Logger | bool, callbacks: list, **overrides: Any
) -> L.Trainer:
    """A Lightning Trainer from the trainer config; ``overrides`` are what the recipe decides (e.g. max_steps).

    Raises:
        RuntimeError: the configured accelerator (CUDA, MPS) is not available on this machine.
    """
    if cfg.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            "trainer.accelerator=gpu but torch sees no CUDA device; use trainer=cpu on this machine"
        )
    if cfg.accelerator == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("trainer.accelerator=mps but MPS is not available; use trainer=cpu")
    kwargs = dict(vars(cfg))
    kwargs.update(overrides)
    return L.Trainer(default_root_dir=run_dir, logger=logger, callbacks=callbacks, **kwargs)


def write_metrics(run_dir: str | Path, metrics: dict[str, float]) -> dict[str, float]:
    """Write ``metrics.json`` (flat name -> number) atomically and return the same dict (DESIGN.md contract).

    Non-finite values are written as NaN.

    Raises:
        TypeError: a metric that is not a number (or a one-element tensor).
    """
    flat = {}
    for name, value in metrics.items():
        value = value.item() if isinstance(value, torch.Tensor) else value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
        flat[name] = value if math.isfinite(value) else float("nan")
    write_json_atomic(Path(run_dir) / "metrics.json", flat, indent=2, sort_keys=True, allow_nan=True)
    return flat


def epoch_checkpoints(dirpath: Path) -> ModelCheckpoint:
    """``dirpath/last.ckpt`` at the end of every training epoch, after that epoch's validation (so the module's
    best-dev state in it includes it): what a killed or requeued run resumes from (``resume_from``).

    At epoch ends only: a sampler seeded per epoch (datamodules.sampling.EpochShuffle) replays the order of a
    whole epoch exactly, where Lightning cannot restart one mid-way. The newest checkpoint is kept (top-1
    without a monitor) and last.ckpt linked to it: with ``save_top_k=0`` Lightning writes last.ckpt only at
    the end of fit, and a crash would lose the whole run.
    """
    return ModelCheckpoint(dirpath=dirpath, save_top_k=1, save_last="link", every_n_epochs=1,
                           save_on_train_epoch_end=True)  # fmt: skip


def resume_from(dirpath: Path) -> str | None:
    """``dirpath/last.ckpt`` when an earlier attempt of this run left one (``ckpt_path`` of ``Trainer.fit``)."""
    last = Path(dirpath) / "last.ckpt"
    if last.exists():
        log.info("resuming from %s", last)
        return str(last)
    return None


def dir_size_mb(path: Path) -> float:
    """Bytes under ``path`` (files, not following links), in MiB."""
    total = sum((Path(root) / f).lstat().st_size for root, _, files in os.walk(path) for f in files)
    return total / 2**20


def finish_run(run_dir: Path, checkpoint_dirs: Iterable[Path], keep_checkpoints: bool) -> float:
    """After a run has succeeded: delete its checkpoint folders unless ``keep_checkpoints`` (a finished run
    needs none to resume, and they are most of its size), then log and return the run dir's size.

    Call it only on success (and on rank 0): a failed run keeps its checkpoints, so rerunning it resumes.

    Returns:
        the run dir's size in MiB (``run_dir_mb`` in metrics.json).
    """
    if not keep_checkpoints:
        for folder in checkpoint_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    size = dir_size_mb(run_dir)
    log.info("run dir %s: %.1f MB%s", run_dir, size, " (checkpoints kept)" if keep_checkpoints else "")
    return size
