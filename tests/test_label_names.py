"""Saved classifiers name their classes as the task does (config.json's id2label / label2id), not LABEL_<id>:
recipe=finetune on string labels and on int labels (the AdaBERT child: tests/test_adabert_saved_child.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_finetune import finetune_overrides
from tests.test_recipes import run_py


def named_labels(tsv: Path, folder: Path) -> Path:
    """``tsv`` (``sentiment_tsv``) with its labels written as names: 0 -> neg, 1 -> pos."""
    header, *rows = tsv.read_text().splitlines()
    named = [f"{text}\t{('neg', 'pos')[int(label)]}" for text, label in (r.rsplit("\t", 1) for r in rows)]
    path = folder / "sentiment_named.tsv"
    path.write_text("\n".join([header, *named]) + "\n")
    return path


@pytest.fixture(scope="module")
def named_sentiment_tsv(sentiment_tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return named_labels(sentiment_tsv, tmp_path_factory.mktemp("named"))


def finetuned_labels(teacher: Path, tsv: Path, tmp_path: Path) -> tuple[dict, dict]:
    overrides = finetune_overrides(teacher, tsv, tmp_path) + [
        "recipe.max_steps=3",
        "recipe.measure_latency=false",
    ]
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    return config["id2label"], config["label2id"]


@pytest.mark.smoke
def test_finetuned_classifier_keeps_string_label_names(
    tiny_teacher_dir, named_sentiment_tsv, tmp_path
) -> None:
    id2label, label2id = finetuned_labels(tiny_teacher_dir, named_sentiment_tsv, tmp_path)
    assert id2label == {"0": "neg", "1": "pos"} and label2id == {"neg": 0, "pos": 1}
    # ... and so does its model card, beside the validation score it was chosen by
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "Labels (id order): neg, pos" in card and "| validation | score |" in card
    assert "pipeline_tag: text-classification" in card


@pytest.mark.smoke
def test_finetuned_classifier_names_int_labels_by_their_value(
    tiny_teacher_dir, sentiment_tsv, tmp_path
) -> None:
    id2label, label2id = finetuned_labels(tiny_teacher_dir, sentiment_tsv, tmp_path)
    assert id2label == {"0": "0", "1": "1"} and label2id == {"0": 0, "1": 1}
