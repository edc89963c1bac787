"""The GLUE benchmark as classification splits: ``datasets.load_dataset("glue", task)`` (needs a network),
its rows as ``RawExample``s, and every split of a task labelled and tokenised.

The task facts (text columns, label count, validation splits) come from ``datamodules.glue.GLUE_TASKS``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from core.assets import DataError
from datamodules.glue import GLUE_TASKS
from datamodules.labels import encode_labels, parse_labels, unlabelled_split
from datamodules.sampling import take_subsample
from datamodules.task_files import RawExample, SourceRows
from datamodules.tokenized import tokenize_texts


def load_glue(glue_task: str) -> Any:
    """``datasets.load_dataset("glue", glue_task)``; needs a network (or a warm datasets cache).

    Raises:
        DataError: the data set cannot be loaded; the message says how to run offline instead.
    """
    import datasets  # only GLUE needs it, and it is slow to import

    try:
        return datasets.load_dataset("glue", glue_task)
    except Exception as err:  # connection failures surface as many exception types across versions
        raise DataError(
            f"task.source=glue: datasets.load_dataset('glue', '{glue_task}') failed "
            f"({type(err).__name__}: {err}). GLUE needs network access the first time; offline, use "
            "source=local with a file (the default task does)."
        ) from err


def glue_examples(dataset: Any, text_columns: list[str]) -> list[RawExample]:
    """Rows of one GLUE split as ``RawExample``s; ``line`` and ``index`` are the row's GLUE ``idx`` (what GLUE's
    submission files are keyed by)."""
    columns = dataset.to_dict()  # columnar access: far faster than iterating rows for QQP/MNLI
    ids = columns["idx"] if "idx" in columns else list(range(len(dataset)))
    texts = list(zip(*(columns[c] for c in text_columns)))
    return [RawExample(i, t, label, i, str(i)) for i, t, label in zip(ids, texts, columns["label"])]


def glue_split_names(validation_splits: tuple[str, ...]) -> dict[str, str]:
    """Our split name -> GLUE's: the first validation set is "validation" and the test set matching it
    "test"; MNLI's second (mismatched) validation and test sets keep their GLUE names."""
    names = {
        "train": "train",
        "validation": validation_splits[0],
        "test": validation_splits[0].replace("validation", "test"),
    }
    names.update({name: name for name in validation_splits[1:]})
    names.update(
        {
            name.replace("validation", "test"): name.replace("validation", "test")
            for name in validation_splits[1:]
        }
    )
    return names


def build_glue(
    dataset: Any,
    glue_task: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_seq_len: int,
    max_examples: int | None,
    seed: int,
) -> dict[str, Any]:
    """Every split of a loaded GLUE task, capped, labelled and tokenised.

    Args:
        dataset: ``load_glue(glue_task)``.
        glue_task: one of ``GLUE_TASKS``.
        tokenizer: the tokenizer.
        max_seq_len: the longest encoded row, special tokens included.
        max_examples: cap per split (a seeded subset in split order), None for all rows.
        seed: seeds the subset.

    Returns:
        ``{"label_names": [...], "splits": {split: tokenize_texts(...) + "labels"}, "labelled": {split: bool},
        "rows": {split: vars(SourceRows)}}``; label names come from the data set's label feature ([] for
        regression); the test splits are unlabelled (GLUE hides their labels) whatever values they carry.

    Raises:
        DataError: a label out of range (names the split and the row's ``idx``).
    """
    task = GLUE_TASKS[glue_task]
    features = dataset["train"].features["label"]
    num_labels = task.num_labels
    label_names = (
        [] if num_labels == 1 else list(getattr(features, "names", [str(i) for i in range(num_labels)]))
    )
    splits, labelled, source_rows = {}, {}, {}
    for ours, theirs in glue_split_names(task.validation_splits).items():
        rows = take_subsample(glue_examples(dataset[theirs], list(task.text_columns)), max_examples, seed)
        where = f"glue/{glue_task}/{theirs}"
        # Unlabelled because it is GLUE's test split (its labels are hidden), not because of a label's value.
        labelled[ours] = not ours.startswith("test")
        if labelled[ours]:
            rows, _ = parse_labels(rows, num_labels, None, where)
            # GLUE labels are ids already; encode_labels only checks their range.
            labels = encode_labels(rows, num_labels, [str(i) for i in range(num_labels)], where)
        else:
            labels = unlabelled_split(len(rows), num_labels)
        splits[ours] = {
            **tokenize_texts([ex.texts for ex in rows], tokenizer, max_seq_len),
            "labels": labels,
        }
        source_rows[ours] = vars(SourceRows.of(rows))
    return {"label_names": label_names, "splits": splits, "labelled": labelled, "rows": source_rows}
