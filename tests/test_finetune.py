"""Downstream fine-tuning: each metric against a hand-computed example, the KD loss against its formula,
and recipe=finetune end to end on a tiny random model and a tiny learnable local task."""

from __future__ import annotations

import json
import math
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch

from datamodules.glue import GLUE_TASKS
from modules.finetuning import build_metrics, metric_names, task_score
from tests.test_recipes import run_py


def test_classification_metrics_match_hand_computed_values() -> None:
    preds = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1])
    labels = torch.tensor([1, 0, 0, 0, 1, 1, 1, 1])
    # TP=4 (idx 0,4,6,7), FP=1 (idx 1), TN=2 (idx 2,3), FN=1 (idx 5)
    tp, fp, tn, fn = 4, 1, 2, 1
    metrics = build_metrics(("acc", "f1", "mcc"), num_labels=2)
    metrics.update(preds, labels)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["acc"] == pytest.approx((tp + tn) / 8)
    assert values["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert values["mcc"] == pytest.approx(mcc)
    assert task_score({"f1": values["f1"], "acc": values["acc"]}) == pytest.approx(100 * (0.8 + 0.75) / 2)


def test_regression_metrics_match_hand_computed_values() -> None:
    preds = torch.tensor([1.0, 2.0, 3.0, 5.0])
    labels = torch.tensor([1.5, 1.0, 4.0, 4.5])
    metrics = build_metrics(("pearson", "spearman"), num_labels=1)
    metrics.update(preds, labels)
    values = {k: float(v) for k, v in metrics.compute().items()}
    p, y = preds - preds.mean(), labels - labels.mean()
    assert values["pearson"] == pytest.approx(float((p * y).sum() / (p.norm() * y.norm())), abs=1e-6)
    # ranks: preds 1,2,3,4; labels 2,1,3,4 -> d^2 = 1+1+0+0 -> 1 - 6*2/(4*15) = 0.8
    assert values["spearman"] == pytest.approx(0.8, abs=1e-6)


def test_metric_names_are_glues_official_ones() -> None:
    assert metric_names("cola", 2) == ("mcc",) and metric_names("stsb", 1) == ("pearson", "spearman")
    assert metric_names("mrpc", 2) == ("f1", "acc") and metric_names("qqp", 2) == ("f1", "acc")
    assert all(metric_names(t, 2) == ("acc",) for t in ("sst2", "mnli", "qnli", "rte", "wnli"))
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert metric_names(None, 2) == ("acc", "f1") and metric_names(None, 3) == ("acc",)


def finetune_overrides(model: Path, tsv: Path, tmp_path: Path, run: str = "run") -> list[str]:
    return [
        "recipe=finetune", f"recipe.model={model}", "recipe.epochs=6", "recipe.optimizer.lr=3e-3",
        "trainer.enable_progress_bar=false", f"task.path={tsv}", "task.format=tsv", "task.text_columns=[text]",
        "task.label_column=label", "task.binarize_at=null", "task.batch_size=16", "task.max_seq_len=16",
        f"task.cache_dir={tmp_path / 'cache'}", "latency.seq_len=16", "latency.repeats=3", "latency.max_cv=10", "latency.max_other_load=null",
        f"latency.cache_path={tmp_path / 'latency.json'}", f"hydra.run.dir={tmp_path / run}",
    ]  # fmt: skip


@pytest.mark.smoke
def test_finetune_learns_a_tiny_task_and_task_kd_runs(tiny_teacher_dir, sentiment_tsv, tmp_path) -> None:
    proc = run_py(*finetune_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/acc"] > 0.8 and metrics["test/acc"] > 0.8  # chance is 0.5
    assert metrics["val/score"] == pytest.approx(100 * (metrics["val/acc"] + metrics["val/f1"]) / 2)
    assert (run_dir / "model" / "config.json").exists() and "latency/p50_ms" in metrics
    predictions = (run_dir / "predictions" / "sentiment.tsv").read_text().splitlines()
    assert predictions[0] == "index\tline\tprediction" and len(predictions) - 1 == 30  # 10% of 300
    # Each prediction joins back to the seeded test sample's row of the one task.path: the model is right
    # about the row it names (a position within the split would name unrelated rows, right half the time).
    source = [row.split("\t") for row in sentiment_tsv.read_text().splitlines()[1:]]
    written = [row.split("\t") for row in predictions[1:]]
    assert all(int(line) == int(index) + 2 for index, line, _ in written)  # header is line 1
    right = sum(source[int(index)][1] == prediction for index, _, prediction in written)
    assert right / len(written) > 0.8

    # task KD from the fine-tuned model into a fresh copy of the random one
    kd = finetune_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path, run="kd") + [
        f"recipe.task_kd.teacher={run_dir / 'model'}",
        "recipe.task_kd.gamma=0.7",
        "recipe.max_steps=95",  # ends mid-epoch (17 steps each): the final model is validated too
    ]
    proc = run_py(*kd, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    csv_log = (tmp_path / "kd" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/kd" in csv_log.splitlines()[0]
    kd_metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert kd_metrics["steps"] == 95 and kd_metrics["val/acc"] > 0.8


@pytest.mark.smoke
def test_finetune_names_a_wrong_label_column_before_training(
    tiny_teacher_dir, sentiment_tsv, tmp_path
) -> None:
    overrides = finetune_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path) + ["task.label_column=stars"]
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode != 0 and "stars" in proc.stderr and "label" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.smoke
def test_task_kd_teacher_with_other_labels_is_refused(tiny_teacher_dir, sentiment_tsv, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification

    other = tmp_path / "three_labels"
    AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, num_labels=3).save_pretrained(other)
    overrides = finetune_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path) + [
        f"recipe.task_kd.teacher={other}"
    ]
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode != 0 and "has 3 labels but task sentiment has 2" in proc.stderr


class FakeGlueSplit:
    """What the datamodule reads of a `datasets` GLUE split: columns, a fingerprint, the label feature."""

    def __init__(self, rows: list[dict], fingerprint: str) -> None:
        self.rows, self._fingerprint = rows, fingerprint
        self.features = {"label": types.SimpleNamespace(names=["entailment", "neutral", "contradiction"])}

    def to_dict(self) -> dict[str, list]:
        return {k: [r[k] for r in self.rows] for k in self.rows[0]}

    def __len__(self) -> int:
        return len(self.rows)


def fake_mnli(n: int = 6) -> dict[str, FakeGlueSplit]:
    def rows(labelled: bool) -> list[dict]:
        return [{"premise": "the movie was good", "hypothesis": "it was good" if i % 2 else "it was bad",
                 "label": i % 3 if labelled else -1, "idx": i} for i in range(n)]  # fmt: skip

    names = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
    return {name: FakeGlueSplit(rows(not name.startswith("test")), name) for name in names}


def test_glue_mnli_has_both_test_sets_and_glues_submission_files(monkeypatch, tokenizer, tmp_path) -> None:
    from datamodules.classification import ClassificationDataModule
    from datamodules.task_config import TaskDataConfig
    from recipes.finetune import submission_files
    from reports.predictions import write_predictions

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a: fake_mnli()))
    cfg = TaskDataConfig(name="mnli", source="glue", glue_task="mnli", cache_dir=str(tmp_path))
    data = ClassificationDataModule(cfg, tokenizer)
    data.setup()
    assert data.validation_splits == ["validation", "validation_mismatched"]
    assert data.test_splits == ["test", "test_mismatched"] and not data.test_labelled  # hidden labels
    assert len(list(data.eval_dataloader("test_mismatched"))[0]["index"]) == 6
    assert submission_files(cfg, data.test_splits) == {"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}

    outputs = [{"index": torch.tensor([1, 0]), "prediction": torch.tensor([2, 0])}]
    rows = data.source_rows["test"]
    write_predictions(tmp_path / "MNLI-m.tsv", outputs, data.label_names, rows, glue=True)
    assert (tmp_path / "MNLI-m.tsv").read_text().splitlines() == [
        "index\tprediction",
        "0\tentailment",
        "1\tcontradiction",
    ]
    # GLUE reads 0/1 for CoLA, SST-2, MRPC, QQP, WNLI
    write_predictions(tmp_path / "CoLA.tsv", outputs, [], rows, glue=True)
    assert (tmp_path / "CoLA.tsv").read_text().splitlines()[1:] == ["0\t0", "1\t2"]
    regression = [{"index": torch.tensor([0]), "prediction": torch.tensor([3.14159])}]
    write_predictions(tmp_path / "STS-B.tsv", regression, [], rows, glue=True)
    assert (tmp_path / "STS-B.tsv").read_text().splitlines()[1:] == ["0\t3.142"]
    sst2 = TaskDataConfig(name="sst2", source="glue", glue_task="sst2")
    assert submission_files(sst2, ["test"]) == {"test": "SST-2.tsv"}
    local = TaskDataConfig(name="sentiment", path="a.tsv")
    assert submission_files(local, ["test"]) == {"test": "sentiment.tsv"}


def test_linear_warmup_decay_vs_transformers() -> None:
    """Why linear_warmup_decay is not replaced by transformers' get_linear_schedule_with_warmup: the two agree
    from the end of the warm-up on, but HF warms up as s/w (LR 0 at the first step) and ours as (s + 1)/w."""
    from transformers import get_linear_schedule_with_warmup

    from modules.finetuning import linear_warmup_decay

    def lrs(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler, out = make(optimizer), []
        for _ in range(100):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    ours = lrs(lambda o: linear_warmup_decay(o, total_steps=100, warmup_fraction=0.1))
    hf = lrs(lambda o: get_linear_schedule_with_warmup(o, num_warmup_steps=10, num_training_steps=100))
    assert ours[:10] == [(s + 1) / 10 for s in range(10)] and hf[:10] == [s / 10 for s in range(10)]
    assert ours[10:] == hf[10:]


@pytest.mark.parametrize("head", ["classification", "qa"])
def test_a_pretrained_model_fine_tunes_with_dropout_on(head: str) -> None:
    """from_pretrained hands back eval mode and Lightning keeps submodule modes through fit: the modules
    must switch the trained model to train mode, or dropout stays off for the whole fine-tuning."""
    import lightning as L
    from transformers import BertForQuestionAnswering, BertForSequenceClassification

    from modules.finetuning import FinetuneModule
    from modules.qa import QAModule
    from tests.conftest import tiny_bert_config

    config = tiny_bert_config(30, hidden_dropout_prob=0.5)
    if head == "classification":
        model = BertForSequenceClassification(config).eval()
        module = FinetuneModule(model, 2, ("acc",), partial(torch.optim.AdamW, lr=1e-3), total_steps=1)
        batch = {"labels": torch.tensor([0, 1])}
    else:
        model = BertForQuestionAnswering(config).eval()
        module = QAModule(model, [], partial(torch.optim.AdamW, lr=1e-3), total_steps=1)
        batch = {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([2, 3])}
    batch |= {"input_ids": torch.randint(5, 30, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}

    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.extend(m.training for m in pl_module.model.modules() if isinstance(m, torch.nn.Dropout))

    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    assert seen and all(seen)
