"""The task-stage presets end to end from run.py on tiny random models (experiment=pkd, tinybert_task then
tinybert_task_pred on its model, pd_distill with transfer rows), and a PKD run with projections and transfer rows that
is killed and resumed ending bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from modules.finetuning import FinetuneModule
from recipes import finetune
from tests.conftest import tiny_bert_config
from tests.test_finetune import finetune_overrides
from tests.test_finetune_resume import assert_same_model, run_config, run_killed
from tests.test_recipes import run_py


@pytest.fixture(scope="module")
def task_teacher(tmp_path_factory, tokenizer) -> Path:
    """A random 4-layer BERT classifier standing in for the teacher fine-tuned on the task (it has the head)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("task_teacher")
    BertForSequenceClassification(tiny_bert_config(len(tokenizer), num_hidden_layers=4, num_labels=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def narrow_student(tmp_path_factory, tokenizer) -> Path:
    """A random 2-layer BERT 16 wide (the teacher is 32): its intermediate terms need projections."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("narrow_student")
    config = tiny_bert_config(len(tokenizer), hidden_size=16, num_attention_heads=2, intermediate_size=32)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def preset(name: str, teacher: Path, tsv: Path, tmp_path: Path, run: str, *extra: str) -> list[str]:
    overrides = finetune_overrides(teacher, tsv, tmp_path, run=run)
    overrides = [o for o in overrides if not o.startswith(("recipe=", "recipe.model=", "recipe.epochs="))]
    return [f"experiment={name}", f"recipe.task_kd.teacher={teacher}", "recipe.epochs=2", "recipe.optimizer.lr=3e-3",
            "recipe.measure_latency=false", *extra, *overrides]  # fmt: skip


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def logged(run_dir: Path) -> list[str]:
    return (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")


@pytest.mark.smoke
def test_each_task_stage_preset_runs_end_to_end(
    task_teacher, narrow_student, sentiment_tsv, pairs_corpus, tmp_path
) -> None:
    # PKD: the teacher's first 3 layers (recipe.model=<the teacher>), PKD-Last over layers 2, 3
    proc = run_py(*preset("pkd", task_teacher, sentiment_tsv, tmp_path, "pkd", f"recipe.model={task_teacher}",
                          "recipe.task_kd.intermediate.layer_map=last"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(student, teacher) layers [(1, 2), (2, 3)]" in (tmp_path / "pkd" / "run.log").read_text()
    pkd = metrics_of(tmp_path / "pkd")
    assert {"train/pt", "train/kd", "train/ce"} <= set(logged(tmp_path / "pkd"))
    assert json.loads((tmp_path / "pkd" / "model" / "config.json").read_text())["num_hidden_layers"] == 3
    assert pkd["params"] < 0.9 * sum(t.numel() for t in load_file(task_teacher / "model.safetensors").values())

    # TinyBERT stage 1 on a narrower student (W_h / W_e projections), then stage 2 on its saved model
    stage1 = preset("tinybert_task", task_teacher, sentiment_tsv, tmp_path, "tb1", f"recipe.model={narrow_student}",
                    "keep_checkpoints=true")  # fmt: skip
    proc = run_py(*stage1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"train/attn", "train/hidn", "train/embd"} <= set(logged(tmp_path / "tb1"))
    assert metrics_of(tmp_path / "tb1")["best_step"] == metrics_of(tmp_path / "tb1")["steps"]  # the last model kept
    # the projections train with the student and are checkpointed, but the saved model is the student alone
    state = torch.load(tmp_path / "tb1" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {k for k in state if k.startswith("intermediate.")} == {
        f"intermediate.projections.{i}.{p}" for i in (0, 1, 2) for p in ("weight", "bias")
    }
    saved = load_file(tmp_path / "tb1" / "model" / "model.safetensors")
    assert not any("projection" in k for k in saved)
    assert sum(t.numel() for t in saved.values()) == metrics_of(tmp_path / "tb1")["params"]
    proc = run_py(*preset("tinybert_task_pred", task_teacher, sentiment_tsv, tmp_path, "tb2",
                          f"recipe.model={tmp_path / 'tb1' / 'model'}"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train/kd" in logged(tmp_path / "tb2") and "train/attn" not in logged(tmp_path / "tb2")

    # PD: soft labels on the labelled rows + the pairs corpus' sides as unlabelled transfer rows
    proc = run_py(*preset("pd_distill", task_teacher, sentiment_tsv, tmp_path, "pd", f"recipe.model={narrow_student}",
                          f"recipe.task_kd.transfer.path={pairs_corpus}", "recipe.task_kd.transfer.max_examples=300"),
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd = metrics_of(tmp_path / "pd")
    assert pd["transfer_examples"] == 300 and pd["task_kd/gamma"] == 1.0
    # the teacher labelled every row of both epochs, labelled and transfer (once per distinct row: the rest reused)
    rows = pd["task_kd/rows_encoded"] + pd["task_kd/rows_reused"]
    assert rows == 2 * (300 + pd["train_examples"]) and pd["task_kd/rows_encoded"] > pd["train_examples"]


@pytest.mark.smoke
def test_killed_and_resumed_pkd_with_projections_and_transfer_rows_matches_uninterrupted(
    task_teacher, narrow_student, sentiment_tsv, pairs_corpus, tmp_path, monkeypatch
) -> None:
    overrides = finetune_overrides(narrow_student, sentiment_tsv, tmp_path) + [
        "recipe.epochs=3", f"recipe.task_kd.teacher={task_teacher}", "recipe.task_kd.intermediate.kind=pkd",
        "recipe.task_kd.intermediate.layer_map=uniform", "recipe.task_kd.intermediate.beta=10",
        f"recipe.task_kd.transfer.path={pairs_corpus}", "recipe.task_kd.transfer.max_examples=100",
    ]  # fmt: skip
    full = finetune.run(run_config(overrides, tmp_path / "full"))
    killed = tmp_path / "killed"
    run_killed(FinetuneModule, run_config(overrides, killed), monkeypatch)
    state = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert any(k.startswith("intermediate.projections.") for k in state["state_dict"])
    resumed = finetune.run(run_config(overrides, killed))
    keys = [k for k in full if k.startswith(("val/", "test/"))] + ["best_step", "steps", "transfer_examples"]
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    assert_same_model(tmp_path / "full", killed)
