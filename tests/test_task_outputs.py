"""What a user gets back from a task: prediction files that join back to the input rows, test metrics
whatever the gold values, and the file format taken from the file unless set for it.

Found by running the recipes as a user would (issue "Wrong results found by trying it as a user would"):
each test writes a tiny file to tmp_path and checks the rows, metrics or message that come back.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from core.assets import DataError
from datamodules.classification import ClassificationDataModule
from datamodules.sampling import split_indices
from datamodules.task_config import TaskDataConfig
from reports.predictions import write_predictions
from tests.test_finetune import FakeGlueSplit
from tests.test_recipes import run_py

TRAIN = [(1, "the movie was good"), (0, "the film was bad"), (1, "great and funny"), (0, "awful and boring")]


def write_rows(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def gold_predictions(dm: ClassificationDataModule, split: str) -> list[dict[str, torch.Tensor]]:
    """``predict_step``-shaped outputs whose prediction is each row's gold label: a row written under the
    wrong source row then shows as a label that row does not have."""
    return [{"index": b["index"], "prediction": b["labels"]} for b in dm.eval_dataloader(split)]


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    return lines[0], lines[1:]


def test_predictions_name_their_source_rows_after_filtering(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # The 2nd row of the test file has score 0 = binarize_at: dropped, so split positions and file rows differ.
    train = write_rows(tmp_path / "train.tsv", "score\ttext", [f"{2 * y - 1}\t{t}" for y, t in TRAIN])
    test = write_rows(tmp_path / "test.tsv", "score\ttext", ["1\tgood", "0\tthe", "-1\tbad", "2\tgreat"])
    cfg = TaskDataConfig(name="toy", train_path=str(train), validation_path=str(train), test_path=str(test),
                         label_column="score", binarize_at=0.0, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    out = tmp_path / "toy.tsv"
    write_predictions(out, gold_predictions(dm, "test"), dm.label_names, dm.source_rows["test"], glue=False)
    header, rows = read_tsv(out)
    assert header == ["index", "line", "prediction"]
    # index = position among the file's data rows, line = the file line; the dropped row is absent.
    assert rows == [["0", "2", "1"], ["2", "4", "0"], ["3", "5", "1"]]


def test_predictions_name_their_source_rows_under_max_examples(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # 50 test rows, a seeded 20 kept: every written row must be the source row it names (text, label, id).
    words = ["good", "bad", "great", "awful", "funny", "boring", "love", "hate", "sad", "happy"]
    texts = [f"{words[i % 10]} {words[(i // 10) % 10]} {words[(i * 7) % 10]}" for i in range(50)]
    labels = [(i * 3) % 2 if i % 5 else 1 - i % 2 for i in range(50)]
    train = write_rows(tmp_path / "train.tsv", "label\ttext", [f"{y}\t{t}" for y, t in TRAIN])
    test = write_rows(tmp_path / "test.tsv", "id\tlabel\ttext",
                      [f"r{i}\t{y}\t{t}" for i, (y, t) in enumerate(zip(labels, texts))])  # fmt: skip
    cfg = TaskDataConfig(name="toy", train_path=str(train), validation_path=str(train), test_path=str(test),
                         max_examples=20, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    out = tmp_path / "toy.tsv"
    write_predictions(out, gold_predictions(dm, "test"), dm.label_names, dm.source_rows["test"], glue=False)
    header, rows = read_tsv(out)
    assert header == ["index", "line", "id", "prediction"] and len(rows) == 20
    assert [int(r[0]) for r in rows] != list(range(20))  # a seeded subset, not the first rows
    for index, line, row_id, prediction in rows:
        i = int(index)
        assert (int(line), row_id, prediction) == (i + 2, f"r{i}", str(labels[i]))
    # ...and the row the model saw at each position is the source row named for it.
    split, source = dm._splits["test"], dm.source_rows["test"]
    for position in range(len(split)):
        seen = tokenizer.decode(split[position]["input_ids"], skip_special_tokens=True)
        assert seen == texts[source.index[position]]


def test_glue_predictions_keep_glues_idx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # GLUE's submission file is keyed by GLUE's own idx, also for a seeded max_examples subset.
    def split(name: str) -> FakeGlueSplit:
        test = name.startswith("test")
        rows = [{"premise": "the movie was good", "hypothesis": "it was bad", "label": -1 if test else i % 3,
                 "idx": 100 + i} for i in range(8)]  # fmt: skip
        return FakeGlueSplit(rows, name)

    names = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
    fake = types.SimpleNamespace(load_dataset=lambda *a: {n: split(n) for n in names})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = TaskDataConfig(name="mnli", source="glue", glue_task="mnli", max_examples=3, cache_dir=str(tmp_path))
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    out = tmp_path / "MNLI-m.tsv"
    loader = dm.eval_dataloader("test")
    outputs = [{"index": b["index"], "prediction": torch.zeros_like(b["index"])} for b in loader]
    write_predictions(out, outputs, dm.label_names, dm.source_rows["test"], glue=True)
    header, rows = read_tsv(out)
    assert header == ["index", "prediction"]
    assert [int(r[0]) for r in rows] == sorted(dm.source_rows["test"].index)
    assert all(100 <= int(r[0]) < 108 for r in rows)


def test_a_minus_one_regression_score_is_a_gold_label(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    train = write_rows(tmp_path / "train.csv", "score,text", ["0.5,good", "2.0,bad", "-1.0,great"])
    test = write_rows(tmp_path / "test.csv", "score,text", ["-1.0,good", "3.5,bad"])
    cfg = TaskDataConfig(name="reg", train_path=str(train), validation_path=str(train), test_path=str(test),
                         label_column="score", num_labels=1, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    assert dm.test_labelled and dm._splits["test"].labels.tolist() == [-1.0, 3.5]


def test_misread_header_names_the_format_to_set(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    csv_file = write_rows(tmp_path / "data.csv", "text,label", ["good,1", "bad,0"])
    cfg = TaskDataConfig(name="toy", path=str(csv_file), format="tsv", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"task\.format=csv"):
        ClassificationDataModule(cfg, tokenizer).setup()
    tsv_file = write_rows(tmp_path / "data.tsv", "text\tlabel", ["good\t1", "bad\t0"])
    cfg = TaskDataConfig(name="toy", path=str(tsv_file), format="csv", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"task\.format=tsv"):
        ClassificationDataModule(cfg, tokenizer).setup()
    cfg = TaskDataConfig(name="toy", path=str(csv_file), format="jsonl", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"task\.format=csv"):
        ClassificationDataModule(cfg, tokenizer).setup()


@pytest.mark.smoke
def test_finetune_reads_a_csv_path_under_the_default_task_and_scores_a_minus_one_test_score(
    tiny_teacher_dir: Path, tmp_path: Path
) -> None:
    # The default task group (sentiment) with only task.path swapped for a .csv: read as CSV, by its suffix.
    # Regression, with a gold score of -1.0 in the test part of the seeded split: test metrics must come back.
    n = 40
    test_rows = set(split_indices(n, [0.8, 0.1, 0.1], 0)[2])
    words = ["good", "bad", "great", "awful", "funny", "boring", "love", "hate"]
    rows = [f"{words[i % 8]} {words[(3 * i) % 8]},{-1.0 if i in test_rows else (i % 5) / 2}" for i in range(n)]
    data = write_rows(tmp_path / "tiny.csv", "text,score", rows)
    proc = run_py(
        "recipe=finetune", f"recipe.model={tiny_teacher_dir}", "recipe.epochs=1", "recipe.max_steps=2",
        "recipe.measure_latency=false", "trainer.enable_progress_bar=false", f"task.path={data}",
        "task.label_column=score", "task.binarize_at=null", "task.num_labels=1", "task.max_seq_len=16",
        f"task.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test/pearson", "test/spearman", "test/score"} <= set(metrics)
    header, written = read_tsv(tmp_path / "run" / "predictions" / "sentiment.tsv")
    assert header == ["index", "line", "prediction"]
    assert sorted(int(r[0]) for r in written) == sorted(test_rows)


def test_other_readers_name_the_format_their_file_needs(tmp_path: Path) -> None:
    # Pre-training text: a one-sentence-per-line corpus under data=dialog's pairs_tsv.
    from datamodules.pretraining_text import pairs_from_tsv

    with pytest.raises(DataError, match=r"data\.format=lines"):
        pairs_from_tsv("the movie was good\nit was fun\n\nanother document\n", "corpus.txt")
    # SQuAD: the format follows the suffix; a file of the other layout says which suffix it needs.
    from datamodules.squad_files import read_squad

    record = {"id": "q1", "question": "what", "context": "good", "answers": {"text": ["good"], "answer_start": [0]}}
    flat = tmp_path / "dev.json"
    flat.write_text(json.dumps(record) + "\n" + json.dumps({**record, "id": "q2"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"\.jsonl"):
        read_squad(flat)
    nested = tmp_path / "dev.jsonl"
    nested.write_text(json.dumps({"data": []}, indent=1), encoding="utf-8")
    with pytest.raises(DataError, match=r"\.json suffix"):
        read_squad(nested)
