"""Runtime helpers every recipe uses: loggers (W&B offline without a key), metrics.json, trainer checks."""

from __future__ import annotations

import json
import math

import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from recipes.common import build_logger, build_trainer, write_metrics
from recipes.config import TrainerConfig
from recipes.tracking import wandb_has_credentials


def job(logger_cfg: dict | None):
    """What build_logger reads of a run config: the logger, the recipe's name (W&B's job_type), the rest as config."""
    from tests.test_wandb_runs import Job, Recipe

    return Job(logger=logger_cfg, recipe=Recipe(name="flash_distill"), run_dir="unused", seed=0)


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.mark.smoke
def test_wandb_logs_offline_without_an_api_key(no_wandb_key, tmp_path) -> None:
    assert not wandb_has_credentials()
    cfg = {
        "_target_": "lightning.pytorch.loggers.WandbLogger",
        "project": "distill-recipes-test",
        "offline": False,
    }
    logger = build_logger(job(cfg), str(tmp_path))
    assert isinstance(logger, WandbLogger)
    logger.log_metrics({"val/mlm_acc": 0.25}, step=1)
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    assert any(runs[0].glob("*.wandb"))  # the run's data is on disk, ready for `wandb sync`


def test_wandb_key_in_environment_counts_as_credentials(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_has_credentials()


def test_csv_logger_goes_to_the_run_dir(tmp_path) -> None:
    logger = build_logger(job({"_target_": "lightning.pytorch.loggers.CSVLogger", "name": "csv"}), str(tmp_path))
    assert isinstance(logger, CSVLogger)
    logger.log_metrics({"loss": 1.5}, step=0)
    logger.save()
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[1].startswith("1.5")
    assert build_logger(job(None), str(tmp_path)) is False


def test_write_metrics_is_flat_numbers(tmp_path) -> None:
    import torch

    out = write_metrics(tmp_path, {"a": 1, "b": torch.tensor(0.5), "c": float("inf")})
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["a"] == 1 and on_disk["b"] == 0.5 and math.isnan(on_disk["c"]) and math.isnan(out["c"])
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(TypeError, match="metric 'name' must be a number"):
        write_metrics(tmp_path, {"name": "Model_1"})


def test_gpu_trainer_on_a_cpu_machine_fails_clearly(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="use trainer=cpu"):
        build_trainer(TrainerConfig(accelerator="gpu", precision="bf16-mixed"), str(tmp_path), False, [])


def test_trainer_config_checks() -> None:
    with pytest.raises(ValueError, match="trainer.precision=16-mixed needs a GPU"):
        TrainerConfig(accelerator="cpu", precision="16-mixed")
    with pytest.raises(ValueError, match="trainer.accelerator"):
        TrainerConfig(accelerator="tpu-v9")


def test_cpu_trainer_builds_with_overrides(tmp_path) -> None:
    trainer = build_trainer(TrainerConfig(), str(tmp_path), False, [], max_steps=7)
    assert trainer.max_steps == 7 and trainer.default_root_dir == str(tmp_path)
