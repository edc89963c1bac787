"""Plain functions every recipe calls: logger, trainer, metrics file, seeding. No recipe logic here."""

from __future__ import annotations

import logging
import math
import netrc
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from core.files import write_json_atomic
from recipes.config import TrainerConfig

log = logging.getLogger(__name__)

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


def wandb_has_credentials() -> bool:
    """True when W&B can log online: an API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL_HOST", "api.wandb.ai")) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def build_logger(logger_cfg: dict | None, run_dir: str) -> Logger | bool:
    """Instantiate the configured Lightning logger in the run dir.

    W&B falls back to offline mode (runs saved under ``<run_dir>/wandb``, upload later with
    ``wandb sync``) when no API key is configured, instead of prompting or failing mid-run.

    Returns:
        The logger, or False (Lightning's "no logger") when ``logger_cfg`` is empty.
    """
    if not logger_cfg:
        return False
    cfg = dict(logger_cfg)
    if cfg.get("_target_") == WANDB_LOGGER:
        mode = os.environ.get("WANDB_MODE")
        if mode in ("offline", "disabled") or not wandb_has_credentials():
            if not cfg.get("offline"):
                log.info(
                    "W&B: no API key found (WANDB_API_KEY / wandb login): logging offline; upload with `wandb sync %s/wandb`",
                    run_dir,
                )
            cfg["offline"] = True
    cfg.setdefault("save_dir", run_dir)
    return instantiate(cfg)


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
