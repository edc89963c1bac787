"""Smoke tier: each recipe end to end through run.py on a tiny random teacher, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForPreTraining, BertForPreTraining

import modules  # noqa: F401
from modules.student import StudentForPreTraining

ROOT = Path(__file__).resolve().parents[1]


def run_py(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_overrides(tiny_teacher_dir: Path, corpus: Path, tmp_path: Path) -> list[str]:
    return [
        f"teacher.name_or_path={tiny_teacher_dir}",
        f"data.source={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_examples=null",
        "data.val_size=40",
        "data.eval_batch_size=16",
        "student.num_blocks=2",
        "student.block.hidden_size=32",
        "student.block.bottleneck_size=16",
        "student.block.intermediate_size=32",
        "student.block.num_heads=2",
        "student.max_position_embeddings=64",
        "latency.seq_len=32",
        "latency.repeats=3",
        "latency.max_cv=10",
        f"latency.cache_path={tmp_path / 'latency.json'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


def test_inspect_recipe_end_to_end(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    proc = run_py("recipe=inspect", *tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["student/blocks"] == 2
    assert metrics["teacher/layers"] == 2
    assert metrics["data/val_examples"] >= 40
    assert 0.0 <= metrics["student/init_nsp_acc"] <= 1.0
    # the saved student loads through the Auto classes and carries the teacher's embeddings
    student = AutoModelForPreTraining.from_pretrained(run_dir / "student")
    assert isinstance(student, StudentForPreTraining)
    assert metrics["student/params"] == student.student.num_parameters()
    ref = BertForPreTraining.from_pretrained(tiny_teacher_dir)
    torch.testing.assert_close(
        student.student.embeddings.word_embeddings.weight[:, 0],
        ref.bert.embeddings.word_embeddings.weight[:, 0],
    )


def test_flash_distill_end_to_end(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    proc = run_py(
        "recipe=flash_distill",
        "recipe.regular_steps=300",  # flash: 15 steps = 2 x 2 per block + 11 pre-training
        "trainer.enable_progress_bar=false",
        *tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 15
    for key in (
        "val/mlm_acc",
        "val/nsp_acc",
        "val/mha",
        "val/fm",
        "val/mlm",
        "val/mlm_kd",
        "val/nsp",
        "params",
        "wall_time_s",
    ):
        assert key in metrics, key
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "csv" / "version_0" / "metrics.csv").exists()  # the default CSV logger
    student = AutoModelForPreTraining.from_pretrained(run_dir / "student")
    assert metrics["params"] == student.student.num_parameters()


def test_flash_distill_with_ddp_and_bf16_on_cpu(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """The GPU code paths that a CPU can run: two DDP processes (gloo) with bf16 autocast. Progressive
    stages leave parameters without gradients, which plain DDP rejects; the recipe must handle it."""
    proc = run_py(
        "recipe=flash_distill",
        "recipe.regular_steps=300",
        "trainer.enable_progress_bar=false",
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.precision=bf16-mixed",
        "data.batch_size=8",
        *tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 15 and metrics["val/loss"] == metrics["val/loss"]  # finite
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()


def test_bad_config_fails_before_any_work(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    overrides = tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path) + ["student.block.num_heads=3"]
    proc = run_py("recipe=inspect", *overrides, cwd=tmp_path)
    assert proc.returncode != 0
    assert "bottleneck_size=16 is not divisible by num_heads=3" in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing was read or built


@pytest.mark.slow
def test_default_run_on_real_assets(tmp_path) -> None:
    """`python run.py` as the README says: a flash distillation of the demo student from the real
    MiniLM teacher on the real dialog corpus, offline (about two minutes on 2 cores)."""
    proc = run_py(f"hydra.run.dir={tmp_path / 'run'}", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 200
    assert 0.05 < metrics["val/mlm_acc"] < 1.0  # well above chance (1/30522) after 200 steps
    assert metrics["val/fm"] < 1.0 and metrics["val/mha"] < 2.0
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()


@pytest.mark.slow
def test_inspect_on_real_assets(tmp_path) -> None:
    proc = run_py("recipe=inspect", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher/params"] == pytest.approx(22.7e6, rel=0.01)
    assert metrics["data/train_examples"] == 20000
