"""recipe=adabert's saved child is the one it reports: BatchNorm statistics recalibrated on training data before
every evaluation and save, and the task's label names in its config. A tiny run (15 training batches per epoch,
a 2-cell child with 16 channels), the child reloaded from disk through the Auto classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from datamodules.classification import ClassificationDataModule
from modules.adabert_training import recalibrate_batchnorm
from tests.test_adabert import EDGES, adabert_run_config, search_config
from tests.test_label_names import named_labels


@pytest.fixture(scope="module")
def named_sentiment_tsv(sentiment_tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return named_labels(sentiment_tsv, tmp_path_factory.mktemp("named"))


def dev_accuracy(model: torch.nn.Module, data: ClassificationDataModule) -> float:
    correct = total = 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).logits  # fmt: skip
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    return correct / total


@pytest.mark.smoke
def test_saved_child_scores_what_the_recipe_reports_and_keeps_label_names(
    tiny_teacher_dir, named_sentiment_tsv, tmp_path
) -> None:
    from recipes import adabert

    cfg = adabert_run_config(tiny_teacher_dir, named_sentiment_tsv, tmp_path, "run")
    cfg.recipe.max_cells, cfg.recipe.search_epochs, cfg.recipe.retrain_epochs = 2, 2, 2
    metrics = adabert.run(cfg)
    student = tmp_path / "run" / "student"
    child = AutoModelForSequenceClassification.from_pretrained(student).eval()
    data = ClassificationDataModule(cfg.task, AutoTokenizer.from_pretrained(student), seed=cfg.seed)
    data.setup()
    assert len(data.train_dataloader()) == 15
    assert dev_accuracy(child, data) == pytest.approx(metrics["val/acc"], abs=1e-6)
    # Saved with the statistics of the training data (not momentum averages still near their start) ...
    saved = {k: v.clone() for k, v in child.named_buffers() if "running" in k}
    recalibrate_batchnorm(child, data.train_dataloader())
    for name, value in child.named_buffers():
        if "running" in name:
            torch.testing.assert_close(saved[name], value, msg=name)
    # ... so it scores as its own weights do when normalised by batch statistics (what the search judged).
    child.train()
    for module in child.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    assert dev_accuracy(child, data) == pytest.approx(metrics["val/acc"], abs=0.05)
    # The label names of the task, in the child and in the teacher recipe=finetune fine-tuned for it.
    for model_dir in (student, tmp_path / "run" / "teacher" / "model"):
        config = json.loads((model_dir / "config.json").read_text())
        assert config["id2label"] == {"0": "neg", "1": "pos"}, model_dir
        assert config["label2id"] == {"neg": 0, "pos": 1}, model_dir
    # Ships: the child's code beside its weights, and a model card with its dev accuracy and labels.
    assert {p.name for p in student.glob("*.py")} == {"adabert.py", "adabert_ops.py"}
    card = (student / "README.md").read_text()
    assert "AdaBERT child" in card and f"| validation | acc | {metrics['val/acc']:.4f} |" in card
    assert "Labels (id order): neg, pos" in card


def test_recalibration_replaces_running_statistics_by_the_training_batches() -> None:
    from modules.adabert import AdaBertForSequenceClassification
    from modules.adabert_child import child_config
    from modules.adabert_ops import DerivedArchitecture

    torch.manual_seed(0)
    child = AdaBertForSequenceClassification(
        child_config(search_config(), DerivedArchitecture(1, ["std_conv_3"] * EDGES))
    )
    batches = [{"input_ids": torch.randint(5, 40, (4, 9))} for _ in range(3)]
    norm = child.cells[0].preprocess[0][2]
    inputs = []
    hook = norm.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    recalibrate_batchnorm(child, batches)
    hook.remove()
    seen = torch.cat(inputs, 0).transpose(0, 1).flatten(1)  # (C, all positions of the three batches)
    # A cumulative average of the batch means (equal batches: the mean over all of them), not a momentum one.
    torch.testing.assert_close(norm.running_mean, seen.mean(1))
    assert int(norm.num_batches_tracked) == 3 and norm.momentum == 0.1 and not child.training
