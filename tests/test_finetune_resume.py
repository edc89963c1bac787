"""recipe=finetune resumes: a run killed mid-epoch and re-run with the same config ends with the best-dev
metrics and the bit-identical saved model of a run that was never interrupted (classification and QA); a
finished run deletes its checkpoints unless keep_checkpoints, a failed one keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modules.finetuning import FinetuneModule
from modules.qa import QAModule
from recipes import finetune
from tests.test_finetune import finetune_overrides
from tests.test_squad import squad_file


def run_config(overrides: list[str], run_dir: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    import run as run_module

    overrides = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(run_module.CONF), version_base="1.3"):
        cfg = compose("run", overrides=[*overrides, "recipe.measure_latency=false", "~logger", *extra])
    return run_module.to_run_config(cfg, str(run_dir))


def classification_overrides(teacher: Path, tsv: Path, tmp_path: Path) -> list[str]:
    return finetune_overrides(teacher, tsv, tmp_path) + ["recipe.epochs=3"]


def qa_overrides(teacher: Path, tmp_path: Path) -> list[str]:
    return [
        "recipe=finetune", "task=squad", "task.source=local", f"recipe.model={teacher}",
        f"task.train_path={squad_file(tmp_path / 'train.json', 80, seed=0)}",
        f"task.validation_path={squad_file(tmp_path / 'dev.json', 20, seed=1)}",
        "task.max_seq_len=24", "task.doc_stride=6", "task.max_query_len=6", "task.batch_size=16",
        "recipe.epochs=3", "recipe.optimizer.lr=3e-3", "trainer.enable_progress_bar=false",
        f"task.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip


def run_killed(module_class: type, cfg, monkeypatch, epoch: int = 1, batch: int = 2) -> None:
    """Run the recipe and kill it (as Ctrl-C / a preemption would) at ``batch`` of ``epoch``."""
    original = module_class.training_step

    def dies(self, batch_, batch_idx):
        if self.current_epoch == epoch and batch_idx == batch:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch_, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(module_class, "training_step", dies)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            finetune.run(cfg)


def assert_same_model(a: Path, b: Path) -> None:
    weights = [load_file(d / "model" / "model.safetensors") for d in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


@pytest.mark.parametrize("task", ["classification", "qa"])
@pytest.mark.smoke
def test_killed_and_resumed_finetune_matches_uninterrupted(
    task, tiny_teacher_dir, sentiment_tsv, tmp_path, monkeypatch
) -> None:
    if task == "qa":
        overrides, module_class = qa_overrides(tiny_teacher_dir, tmp_path), QAModule
    else:
        overrides, module_class = classification_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path), FinetuneModule
    full = finetune.run(run_config(overrides, tmp_path / "full", "keep_checkpoints=true"))
    assert (tmp_path / "full" / "checkpoints" / "last.ckpt").exists()  # kept when asked

    killed = tmp_path / "killed"
    run_killed(module_class, run_config(overrides, killed), monkeypatch)
    assert not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.ckpt"
    assert last.exists()  # a failed run keeps its checkpoints, whatever keep_checkpoints says
    state = torch.load(last, weights_only=False)["finetune"]
    assert state["best"]["best_step"] == state["validated_at"]  # epoch 0's validation is in it

    resumed = finetune.run(run_config(overrides, killed))
    keys = [k for k in full if k.startswith(("val/", "test/"))] + ["best_step", "steps"]
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    assert_same_model(tmp_path / "full", killed)
    if task == "qa":
        answers = [json.loads(next((d / "predictions").iterdir()).read_text()) for d in (tmp_path / "full", killed)]
        assert answers[0] == answers[1]
    # finished: its checkpoints are gone (keep_checkpoints=false), and it says how big it is
    assert not (killed / "checkpoints").exists()
    assert json.loads((killed / "metrics.json").read_text())["run_dir_mb"] == pytest.approx(resumed["run_dir_mb"])
    assert 0 < resumed["run_dir_mb"] < full["run_dir_mb"]


def test_finish_run_deletes_checkpoints_unless_kept_and_states_the_size(tmp_path) -> None:
    from recipes.common import finish_run

    for keep in (True, False):
        run_dir = tmp_path / str(keep)
        stages = [run_dir / stage / "checkpoints" for stage in ("search", "retrain")]
        for folder in stages:
            folder.mkdir(parents=True)
            (folder / "last.ckpt").write_bytes(b"x" * 2**20)
        (run_dir / "model.safetensors").write_bytes(b"x" * 2**19)
        size = finish_run(run_dir, stages, keep_checkpoints=keep)
        assert all(folder.exists() for folder in stages) == keep
        assert size == pytest.approx(2.5 if keep else 0.5)
