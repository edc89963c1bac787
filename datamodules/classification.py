"""Sentence and sentence-pair classification / regression data: GLUE-style tasks and local files.

The pipeline is a chain of small pure functions that ``ClassificationDataModule.setup`` calls in order:

    read_examples -> parse_labels -> split_indices -> encode_labels -> tokenize_texts -> cache

Local files (TSV, CSV, JSONL) are the offline default; ``source: glue`` loads the GLUE benchmark with
``datasets.load_dataset`` where there is a network. Every data problem is raised as ``DataError``
naming the file, the line and the value before any training starts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import MISSING
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from core.assets import DataError, decode_utf8, file_fingerprint, resolve_path, tokenizer_identity
from core.files import torch_save_atomic

log = logging.getLogger(__name__)

# task -> (text columns, num_labels, validation split names). num_labels 1 = regression.
# MNLI has two validation (and test) sets; the first validation split is the one monitored.
GLUE_TASKS: dict[str, tuple[tuple[str, ...], int, tuple[str, ...]]] = {
    "cola": (("sentence",), 2, ("validation",)),
    "sst2": (("sentence",), 2, ("validation",)),
    "mrpc": (("sentence1", "sentence2"), 2, ("validation",)),
    "stsb": (("sentence1", "sentence2"), 1, ("validation",)),
    "qqp": (("question1", "question2"), 2, ("validation",)),
    "mnli": (("premise", "hypothesis"), 3, ("validation_matched", "validation_mismatched")),
    "qnli": (("question", "sentence"), 2, ("validation",)),
    "rte": (("sentence1", "sentence2"), 2, ("validation",)),
    "wnli": (("sentence1", "sentence2"), 2, ("validation",)),
}

FORMATS = ("tsv", "csv", "jsonl")
SUFFIX_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}

# GLUE test splits carry label -1; a local test file may use -1 too for "no gold label".
UNLABELLED = -1

# Bumped when the cache payload layout changes, so stale files are never read as the new layout.
CACHE_VERSION = 2  # 2: GLUE MNLI's test_mismatched split

# Config fields that change how data is served but not what is tokenised: kept out of the cache
# key so that, e.g., a new batch size reuses the cache. File paths are keyed by content instead.
_NOT_IN_CACHE_KEY = frozenset(
    {
        "name",
        "path",
        "train_path",
        "validation_path",
        "test_path",
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "cache_dir",
    }
)

# Tokenise in chunks so QQP-sized splits (364k pairs) do not hold every Python list at once.
_TOKENIZE_CHUNK = 10_000


@dataclass
class TaskDataConfig:
    """Schema of the ``task`` config group: which data, how it is read, split, tokenised and batched.

    For ``source: glue`` the text columns, label column and ``num_labels`` are facts of the GLUE
    task and are derived from ``GLUE_TASKS`` in ``__post_init__`` (YAML need not set them).
    """

    name: str = MISSING  # display name, e.g. "sentiment", "sst2"
    source: str = "local"  # "local" (files) or "glue" (datasets.load_dataset("glue", glue_task))
    glue_task: str | None = None  # one of GLUE_TASKS when source=glue
    path: str | None = None  # one local file split into train/validation/test by `split`
    train_path: str | None = None  # or explicit per-split files (train and validation required)
    validation_path: str | None = None
    test_path: str | None = None
    format: str | None = None  # tsv | csv | jsonl; None = from the file suffix
    text_columns: list[str] = field(default_factory=lambda: ["text"])  # 1 (single) or 2 (pair)
    label_column: str = "label"
    binarize_at: float | None = None  # label = value > binarize_at; rows exactly at it are dropped
    num_labels: int = 2  # 1 = regression (float labels)
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/validation/test
    split_seed: int = 0
    max_seq_len: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0
    max_examples: int | None = None  # cap per split after splitting, for demo scale
    cache_dir: str = "~/.cache/distill-recipes/tasks"

    def __post_init__(self) -> None:
        if not self.name or self.name == MISSING:
            raise ValueError("task.name: required; set a display name such as 'sentiment' or 'sst2'")
        if self.source == "glue":
            self._check_glue()
        elif self.source == "local":
            self._check_local()
        else:
            raise ValueError(f"task.source: must be 'local' or 'glue', got {self.source!r}")

        if len(self.text_columns) not in (1, 2):
            raise ValueError(
                f"task.text_columns: give 1 or 2 columns (single text or a pair), got {list(self.text_columns)}"
            )
        if any(not c for c in self.text_columns) or len(set(self.text_columns)) != len(self.text_columns):
            raise ValueError(
                f"task.text_columns: column names must be non-empty and distinct, got {list(self.text_columns)}"
            )
        if not self.label_column or self.label_column in self.text_columns:
            raise ValueError(
                f"task.label_column: must be a non-empty column that is not a text column, got "
                f"{self.label_column!r} with text_columns {list(self.text_columns)}"
            )
        if self.num_labels < 1:
            raise ValueError(f"task.num_labels: must be >= 1 (1 = regression), got {self.num_labels}")
        if self.binarize_at is not None and self.num_labels != 2:
            raise ValueError(
                f"task.binarize_at: gives two classes, so task.num_labels must be 2, got {self.num_labels}"
            )
        self._check_split()
        # [CLS] x [SEP] is the shortest useful single input; a pair needs at least [CLS] a [SEP] b [SEP].
        min_len = 2 * len(self.text_columns) + 1
        if self.max_seq_len < min_len:
            raise ValueError(
                f"task.max_seq_len: must be >= {min_len} for {len(self.text_columns)} text column(s), "
                f"got {self.max_seq_len}"
            )
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"task.{name}: must be > 0, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"task.num_workers: must be >= 0, got {self.num_workers}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"task.max_examples: must be >= 1, or null for no cap, got {self.max_examples}")
        if not self.cache_dir:
            raise ValueError("task.cache_dir: must be a directory path")

    def _check_glue(self) -> None:
        if self.glue_task not in GLUE_TASKS:
            raise ValueError(
                f"task.glue_task: source=glue needs one of {sorted(GLUE_TASKS)}, got {self.glue_task!r}"
            )
        for name in ("path", "train_path", "validation_path", "test_path"):
            if getattr(self, name) is not None:
                raise ValueError(f"task.{name}: not used when source=glue; remove it or set source=local")
        text_columns, num_labels, _ = GLUE_TASKS[self.glue_task]
        self.text_columns = list(text_columns)
        self.label_column = "label"
        self.num_labels = num_labels

    def _check_local(self) -> None:
        if self.glue_task is not None:
            raise ValueError("task.glue_task: only used when source=glue; remove it or set source=glue")
        if (self.path is None) == (self.train_path is None):
            raise ValueError(
                "task.path: set exactly one of task.path (one file, split by task.split) or "
                f"task.train_path (+ task.validation_path, optional task.test_path); got path={self.path!r}, "
                f"train_path={self.train_path!r}"
            )
        if self.path is not None:
            for name in ("validation_path", "test_path"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"task.{name}: not used with task.path (which is split by task.split); "
                        "use train_path/validation_path/test_path instead of path"
                    )
        elif self.validation_path is None:
            raise ValueError("task.validation_path: required when task.train_path is set")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"task.format: must be one of {list(FORMATS)} or null, got {self.format!r}")
        for name in ("path", "train_path", "validation_path", "test_path"):
            value = getattr(self, name)
            if value is not None:
                infer_format(value, self.format, field_name=name)

    def _check_split(self) -> None:
        fractions = list(self.split)
        if len(fractions) != 3:
            raise ValueError(f"task.split: give 3 fractions [train, validation, test], got {fractions}")
        total = sum(fractions)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"task.split: fractions must sum to 1, got {fractions} (sum {total:g})")
        if fractions[0] <= 0 or fractions[1] <= 0 or fractions[2] < 0:
            raise ValueError(
                f"task.split: train and validation fractions must be > 0 and test >= 0, got {fractions}"
            )


@dataclass
class RawExample:
    """One row as read from a file or data set, before labels are encoded.

    Attributes:
        line: 1-based line of the row in its file (GLUE: the row's ``idx``), for error messages.
        texts: 1 or 2 texts, in the order of ``text_columns``.
        label: the label value as read; after ``parse_labels``: int, float or str.
    """

    line: int
    texts: tuple[str, ...]
    label: Any


# --------------------------------------------------------------------------------------------- reading


def infer_format(path: str, fmt: str | None, field_name: str = "path") -> str:
    """The file format: ``fmt`` when given, else from the file suffix.

    Raises:
        ValueError: ``fmt`` is None and the suffix is not one of ``SUFFIX_FORMATS``.
    """
    if fmt is not None:
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ValueError(
            f"task.format: cannot infer the format of task.{field_name}={path!r} from suffix {suffix!r} "
            f"(known: {sorted(SUFFIX_FORMATS)}); set task.format to one of {list(FORMATS)}"
        )
    return SUFFIX_FORMATS[suffix]


def read_examples(path: Path, fmt: str, text_columns: list[str], label_column: str) -> list[RawExample]:
    """Read the text and label columns of every row of a TSV, CSV or JSONL file.

    TSV is read without quote handling: TSV has no quoting convention, and review text such as
    ``''Conan''`` or ``9" TV`` must stay as written. CSV uses the standard (Excel) quoting.

    Args:
        path: an existing file.
        fmt: "tsv", "csv" or "jsonl".
        text_columns: 1 or 2 column names (JSONL: keys).
        label_column: the label column name.

    Returns:
        One ``RawExample`` per data row, labels as read (str for TSV/CSV, any JSON value for JSONL).

    Raises:
        DataError: empty file, bad bytes, missing columns, malformed rows.
    """
    text = decode_utf8(path)
    if fmt == "jsonl":
        return _read_jsonl(text, path, text_columns, label_column)
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    return _read_delimited(reader, path, text_columns, label_column)


def _read_delimited(reader: Any, path: Path, text_columns: list[str], label_column: str) -> list[RawExample]:
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):  # skip leading blank lines
        header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty")
    columns = [h.strip() for h in header]
    missing = [c for c in [*text_columns, label_column] if c not in columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} not found in the header; the file has columns {columns} "
            "(set task.text_columns / task.label_column)"
        )
    text_idx = [columns.index(c) for c in text_columns]
    label_idx = columns.index(label_column)
    examples = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):  # blank line, e.g. at the end of the file
            continue
        if len(row) != len(columns):
            raise DataError(
                f"{path} line {reader.line_num}: {len(row)} fields, the header has {len(columns)} "
                f"({columns}); check for stray delimiters or quotes in this row"
            )
        examples.append(RawExample(reader.line_num, tuple(row[i] for i in text_idx), row[label_idx].strip()))
    if not examples:
        raise DataError(f"{path}: has a header but no data rows")
    return examples


def _read_jsonl(text: str, path: Path, text_columns: list[str], label_column: str) -> list[RawExample]:
    examples = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path} line {line_no}: not valid JSON ({err.msg}); jsonl needs one object per line"
            ) from err
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}; "
                "jsonl needs one object per line"
            )
        missing = [c for c in [*text_columns, label_column] if c not in record]
        if missing:
            raise DataError(
                f"{path} line {line_no}: key(s) {missing} not found; the object has keys {sorted(record)} "
                "(set task.text_columns / task.label_column)"
            )
        texts = tuple(record[c] for c in text_columns)
        bad = [c for c, t in zip(text_columns, texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"{path} line {line_no}: text column(s) {bad} must be strings, got {texts!r}")
        examples.append(RawExample(line_no, texts, record[label_column]))
    if not examples:
        raise DataError(f"{path}: file is empty")
    return examples


# ---------------------------------------------------------------------------------------------- labels


def _as_int(value: Any) -> int | None:
    """The value as an int label when it is one (42, "42", " -1"), else None. Bools are not labels."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _as_float(value: Any, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: label {value!r} is not a number ({what})") from err
    if not math.isfinite(number):
        raise DataError(f"{where}: label {value!r} is not a finite number ({what})")
    return number


def parse_labels(
    examples: list[RawExample], num_labels: int, binarize_at: float | None, path: Path | str
) -> tuple[list[RawExample], int]:
    """Parse raw label values; with ``binarize_at`` threshold them and drop rows exactly at it.

    Args:
        examples: rows as read.
        num_labels: 1 = regression (float labels); otherwise classification.
        binarize_at: when set, label = int(float(value) > binarize_at).
        path: the source, for error messages.

    Returns:
        (examples with labels parsed: float for regression, int for binarised and int-valued labels,
        str for other class names, kept rows only; number of rows dropped at the threshold).

    Raises:
        DataError: a label that is empty or not a number where a number is needed (names line and value).
    """
    parsed = []
    dropped = 0
    for ex in examples:
        where = f"{path} line {ex.line}"
        value = ex.label
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: empty label")
        if binarize_at is not None:
            number = _as_float(value, where, f"task.binarize_at={binarize_at} needs numeric labels")
            if number == binarize_at:  # neither class: the task defines these rows as neutral
                dropped += 1
                continue
            label: Any = int(number > binarize_at)
        elif num_labels == 1:
            label = _as_float(value, where, "task.num_labels=1 is regression and needs numeric labels")
        else:
            as_int = _as_int(value)
            label = as_int if as_int is not None else str(value).strip()
        parsed.append(RawExample(ex.line, ex.texts, label))
    return parsed, dropped


def label_names_for(train_labels: list[Any], num_labels: int, path: Path | str) -> list[str]:
    """Class names, index = label id, decided by the training split.

    Int labels name themselves ("0", "1", ...). Any other values are mapped to ids by their sorted
    unique values in the training split, so the mapping does not depend on row order.

    Args:
        train_labels: parsed training labels (int or str).
        num_labels: number of classes.
        path: the source, for error messages.

    Returns:
        ``num_labels`` names for int labels, else the sorted unique training values.

    Raises:
        DataError: more distinct values than ``num_labels``.
    """
    if all(isinstance(label, int) for label in train_labels):
        return [str(i) for i in range(num_labels)]
    names = sorted({str(label) for label in train_labels})
    if len(names) > num_labels:
        raise DataError(
            f"{path}: the training split has {len(names)} distinct labels {names[:20]} but "
            f"task.num_labels={num_labels}; fix task.num_labels or the label column"
        )
    return names


def encode_labels(
    examples: list[RawExample],
    num_labels: int,
    label_names: list[str],
    path: Path | str,
    allow_unlabelled: bool,
) -> torch.Tensor:
    """Label ids (classification) or values (regression) of one split.

    Args:
        examples: parsed rows of the split.
        num_labels: 1 = regression.
        label_names: from ``label_names_for``; names that are ints map to themselves.
        path: the source, for error messages.
        allow_unlabelled: test splits may carry -1 (no gold label, as in GLUE test sets).

    Returns:
        (N,) float32 for regression, else (N,) int64 with values in [0, num_labels) or -1.

    Raises:
        DataError: a label out of range or not among the training labels (names line and value).
    """
    if num_labels == 1:
        return torch.tensor([float(ex.label) for ex in examples], dtype=torch.float32)
    by_name = {name: i for i, name in enumerate(label_names)}
    names_are_ids = label_names == [str(i) for i in range(num_labels)]
    ids = []
    for ex in examples:
        label = ex.label
        if isinstance(label, int) and allow_unlabelled and label == UNLABELLED:
            ids.append(UNLABELLED)
        elif isinstance(label, int) and names_are_ids:
            if not 0 <= label < num_labels:
                raise DataError(
                    f"{path} line {ex.line}: label {label} is out of range [0, {num_labels}) "
                    f"(task.num_labels={num_labels})"
                )
            ids.append(label)
        elif str(label) in by_name:
            ids.append(by_name[str(label)])
        else:
            raise DataError(
                f"{path} line {ex.line}: label {label!r} is not one of the training labels {label_names}"
            )
    return torch.tensor(ids, dtype=torch.long)


# -------------------------------------------------------------------------------------------- splitting


def split_sizes_for(n: int, fractions: list[float]) -> list[int]:
    """Split ``n`` rows by ``fractions``: floors, then the leftover rows to the largest remainders.

    Returns:
        Sizes that sum to ``n``, each within one row of ``n * fraction``.
    """
    exact = [n * f for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(fractions)), key=lambda i: exact[i] - sizes[i], reverse=True)
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_indices(n: int, fractions: list[float], seed: int) -> tuple[list[int], list[int], list[int]]:
    """Seeded random train/validation/test partition of ``range(n)``.

    The permutation depends only on ``n`` and ``seed``, so a fixed seed gives the same split
    whatever is done later (``max_examples`` caps take a prefix of each part).

    Returns:
        (train, validation, test) row indices, disjoint, together covering ``range(n)``.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_val, _ = split_sizes_for(n, fractions)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def subsample(n: int, max_examples: int | None, seed: int) -> list[int]:
    """Row indices of a seeded random subset of at most ``max_examples`` rows, in file order."""
    if max_examples is None or n <= max_examples:
        return list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:max_examples])


# ------------------------------------------------------------------------------------------- tokenising


def tokenize_texts(
    texts: list[tuple[str, ...]], tokenizer: PreTrainedTokenizerBase, max_seq_len: int
) -> dict[str, torch.Tensor]:
    """Tokenise single texts or pairs, truncated to ``max_seq_len``, stored flat without padding.

    Pairs are encoded as ``tokenizer(text_a, text_b)`` (segment ids 0 then 1) and truncated
    longest-first. Rows are concatenated so the cache is a few tensors, not millions of small ones.

    Args:
        texts: N tuples of 1 or 2 strings.
        tokenizer: a Hugging Face tokenizer.
        max_seq_len: the longest encoded row, special tokens included.

    Returns:
        input_ids (T,) int32 and token_type_ids (T,) int8, T = total tokens; lengths (N,) int32.
    """
    input_ids: list[int] = []
    token_type_ids: list[int] = []
    lengths: list[int] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = texts[start : start + _TOKENIZE_CHUNK]
        first = [t[0] for t in chunk]
        second = [t[1] for t in chunk] if len(chunk[0]) == 2 else None
        encoded = tokenizer(
            first,
            second,
            truncation=True,
            max_length=max_seq_len,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"]):
            input_ids.extend(ids)
            token_type_ids.extend(types)
            lengths.append(len(ids))
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.int32),
        "token_type_ids": torch.tensor(token_type_ids, dtype=torch.int8),
        "lengths": torch.tensor(lengths, dtype=torch.int32),
    }


class TokenizedSplit(Dataset):
    """One tokenised split; item ``i`` is row ``i`` of the split, unpadded.

    Args:
        input_ids: (T,) all rows' token ids concatenated.
        token_type_ids: (T,) segment ids, aligned with ``input_ids``.
        lengths: (N,) tokens per row.
        labels: (N,) int64 label ids (-1 = no gold label) or float32 regression targets.
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        lengths: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.lengths = lengths
        self.labels = labels
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.long().cumsum(0)])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return {
            "input_ids": self.input_ids[start:end],  # (L,)
            "token_type_ids": self.token_type_ids[start:end],  # (L,)
            "labels": self.labels[i],  # ()
            "index": i,
        }


def pad_collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch rows, right-padded to the longest row of this batch (not max_seq_len).

    Args:
        items: rows from ``TokenizedSplit``.
        pad_id: the tokenizer's pad token id.

    Returns:
        input_ids, attention_mask, token_type_ids: (B, S) int64, padding = pad_id / 0 / 0;
        labels: (B,) int64 or float32; index: (B,) int64 row index within the split.
    """
    longest = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((len(items), longest), dtype=torch.long)  # (B, S)
    token_type_ids = torch.zeros((len(items), longest), dtype=torch.long)  # (B, S)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        input_ids[row, :length] = item["input_ids"]
        attention_mask[row, :length] = 1
        token_type_ids[row, :length] = item["token_type_ids"]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": torch.stack([item["labels"] for item in items]),  # (B,)
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),  # (B,)
    }


# ---------------------------------------------------------------------------------------------- caching


def cache_key(cfg: TaskDataConfig, sources: dict[str, str], tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 over everything that changes the tokenised splits.

    Args:
        cfg: the task config; every field except those in ``_NOT_IN_CACHE_KEY`` is keyed.
        sources: split role -> content fingerprint (file sha256, or the GLUE data set fingerprint).
        tokenizer: the tokenizer.

    Returns:
        A hex digest.
    """
    content = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_CACHE_KEY}
    payload = {
        "version": CACHE_VERSION,
        "sources": sources,
        "tokenizer": tokenizer_identity(tokenizer),
        "cfg": content,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def load_cache(path: Path, version: int, task_name: str) -> dict[str, Any] | None:
    """A cached payload of this layout ``version``, or None: absent, unreadable or another layout (rebuild)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # a corrupt or foreign file is a miss, not a crash: rebuild it
        log.warning("task %s: ignoring unreadable cache %s (%s); rebuilding", task_name, path, err)
        return None
    if not isinstance(payload, dict) or payload.get("version") != version:
        return None
    return payload


# ------------------------------------------------------------------------------------------------- GLUE


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
    """Rows of one GLUE split as ``RawExample``s; ``line`` is the row's GLUE ``idx``."""
    columns = dataset.to_dict()  # columnar access: far faster than iterating rows for QQP/MNLI
    ids = columns["idx"] if "idx" in columns else list(range(len(dataset)))
    texts = list(zip(*(columns[c] for c in text_columns)))
    return [RawExample(i, t, label) for i, t, label in zip(ids, texts, columns["label"])]


# ------------------------------------------------------------------------------------------- datamodule


class EpochShuffle(Sampler[int]):
    """A random order per epoch that depends only on (seed, epoch), recomputed from the epoch Lightning sets
    (``set_epoch``). It is the order a ``RandomSampler`` with a generator seeded with ``seed`` yields in its
    e-th full epoch (that sampler draws two permutations per epoch, the second one empty-sliced), so
    uninterrupted runs keep the batch order they had before resumption was exact."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(2 * self.epoch):
            torch.randperm(self.size, generator=generator)  # the earlier epochs' draws
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ClassificationDataModule(LightningDataModule):
    """Sentence / sentence-pair classification or regression, tokenised once and cached on disk.

    After ``setup()``: ``num_labels``, ``label_names`` (index = label id; ``[]`` for regression),
    ``split_sizes`` (split name -> rows), ``cache_path`` and ``from_cache``.

    Splits are "train", "validation", "test" (test may be absent for local files without one);
    MNLI adds "validation_mismatched" and ``val_dataloader`` then returns two loaders.

    Args:
        cfg: the task config.
        tokenizer: the student's / teacher's Hugging Face tokenizer (needs a pad token).
        seed: seeds the order in which training batches are shuffled (not the split: cfg.split_seed).
    """

    def __init__(self, cfg: TaskDataConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "tokenizer: has no pad token, which dynamic padding needs; set tokenizer.pad_token"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.seed = seed
        self.num_labels = cfg.num_labels
        self.label_names: list[str] = []
        self.split_sizes: dict[str, int] = {}
        self.cache_path: Path | None = None
        self.from_cache = False
        self.validation_splits: list[str] = ["validation"]
        self.test_splits: list[str] = []
        self._splits: dict[str, TokenizedSplit] = {}

    # ----------------------------------------------------------------------------------- setup

    def setup(self, stage: str | None = None) -> None:
        """Read, filter, split, tokenise (or load all of that from the cache). Runs once."""
        if self._splits:
            return
        if self.cfg.source == "glue":
            dataset = load_glue(str(self.cfg.glue_task))
            # datasets' own content fingerprint of each split: changes when the data changes.
            sources = {name: split._fingerprint for name, split in dataset.items()}
        else:
            dataset = None
            files = self._local_files()
            sources = {role: file_fingerprint(p) for role, p in files.items()}

        key = cache_key(self.cfg, sources, self.tokenizer)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.cfg.name)
        self.cache_path = resolve_path(self.cfg.cache_dir) / f"{safe_name}-{key[:24]}.pt"
        payload = self._load_cache(self.cache_path)
        self.from_cache = payload is not None
        if payload is None:
            splits, self.label_names = (
                self._build_glue(dataset) if dataset is not None else self._build_local(files)
            )
            payload = {"version": CACHE_VERSION, "label_names": self.label_names, "splits": splits}
            torch_save_atomic(payload, self.cache_path)
            log.info("task %s: tokenised and cached to %s", self.cfg.name, self.cache_path)
        else:
            log.info("task %s: loaded tokenised splits from %s", self.cfg.name, self.cache_path)

        self.label_names = list(payload["label_names"])
        self._splits = {name: TokenizedSplit(**tensors) for name, tensors in payload["splits"].items()}
        self.split_sizes = {name: len(split) for name, split in self._splits.items()}
        self.validation_splits = [n for n in self._splits if n.startswith("validation")]
        self.test_splits = [n for n in self._splits if n.startswith("test")]

    def _local_files(self) -> dict[str, Path]:
        """Split role -> existing file; "all" for a single file split by cfg.split."""
        fields = (
            {"all": "path"}
            if self.cfg.path is not None
            else {"train": "train_path", "validation": "validation_path", "test": "test_path"}
        )
        files = {}
        for role, name in fields.items():
            value = getattr(self.cfg, name)
            if value is None:
                continue
            path = resolve_path(value)
            if not path.is_file():
                raise FileNotFoundError(f"task.{name}: file not found: {path} (from {value!r})")
            files[role] = path
        return files

    def _load_cache(self, path: Path) -> dict[str, Any] | None:
        return load_cache(path, CACHE_VERSION, self.cfg.name)

    def _build_local(self, files: dict[str, Path]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
        cfg = self.cfg
        fmt = {role: infer_format(str(p), cfg.format) for role, p in files.items()}
        parsed: dict[str, list[RawExample]] = {}
        for role, path in files.items():
            raw = read_examples(path, fmt[role], cfg.text_columns, cfg.label_column)
            kept, dropped = parse_labels(raw, cfg.num_labels, cfg.binarize_at, path)
            if not kept:
                raise DataError(
                    f"{path}: no rows left after filtering ({len(raw)} read, {dropped} dropped with a "
                    f"label exactly at task.binarize_at={cfg.binarize_at})"
                )
            parsed[role] = kept

        if "all" in parsed:
            rows = parsed.pop("all")
            parts = split_indices(len(rows), cfg.split, cfg.split_seed)
            for role, indices in zip(("train", "validation", "test"), parts):
                if cfg.max_examples is not None:
                    indices = indices[: cfg.max_examples]
                if role == "test" and cfg.split[2] == 0:
                    continue  # no test split asked for
                if not indices:
                    raise DataError(
                        f"{files['all']}: the {role} split is empty ({len(rows)} rows after filtering, "
                        f"task.split={list(cfg.split)}); add rows or change task.split"
                    )
                parsed[role] = [rows[i] for i in indices]
            source: dict[str, Path] = dict.fromkeys(parsed, files["all"])
        else:
            for role, rows in parsed.items():
                # A seeded subset rather than the first rows: files are often sorted by label.
                parsed[role] = [rows[i] for i in subsample(len(rows), cfg.max_examples, cfg.split_seed)]
            source = files

        label_names = (
            []
            if cfg.num_labels == 1
            else label_names_for([ex.label for ex in parsed["train"]], cfg.num_labels, source["train"])
        )
        splits = {}
        for role, rows in parsed.items():
            labels = encode_labels(rows, cfg.num_labels, label_names, source[role], role == "test")
            splits[role] = {
                **tokenize_texts([ex.texts for ex in rows], self.tokenizer, cfg.max_seq_len),
                "labels": labels,
            }
        return splits, label_names

    def _build_glue(self, dataset: Any) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
        cfg = self.cfg
        _, num_labels, validation_names = GLUE_TASKS[str(cfg.glue_task)]
        # Our split name -> GLUE's: the first validation set is "validation"; mnli's second keeps its
        # GLUE name, and the test set matching the first validation set is "test".
        names = {
            "train": "train",
            "validation": validation_names[0],
            "test": validation_names[0].replace("validation", "test"),
        }
        # MNLI's second (mismatched) validation and test sets keep their GLUE names.
        names.update({name: name for name in validation_names[1:]})
        names.update(
            {
                name.replace("validation", "test"): name.replace("validation", "test")
                for name in validation_names[1:]
            }
        )
        features = dataset["train"].features["label"]
        label_names = (
            [] if num_labels == 1 else list(getattr(features, "names", [str(i) for i in range(num_labels)]))
        )
        splits = {}
        for ours, theirs in names.items():
            rows = glue_examples(dataset[theirs], cfg.text_columns)
            rows = [rows[i] for i in subsample(len(rows), cfg.max_examples, cfg.split_seed)]
            where = f"glue/{cfg.glue_task}/{theirs}"
            rows, _ = parse_labels(rows, num_labels, None, where)
            # GLUE labels are ids already; encode_labels only checks their range.
            labels = encode_labels(
                rows, num_labels, [str(i) for i in range(num_labels)], where, ours.startswith("test")
            )
            splits[ours] = {
                **tokenize_texts([ex.texts for ex in rows], self.tokenizer, cfg.max_seq_len),
                "labels": labels,
            }
        return splits, label_names

    @property
    def test_labelled(self) -> bool:
        """Whether every test row has a gold label (GLUE's test labels are hidden: -1)."""
        return bool((self._split("test").labels != UNLABELLED).all())

    # ----------------------------------------------------------------------------------- loaders

    def _split(self, name: str) -> TokenizedSplit:
        if not self._splits:
            raise RuntimeError("ClassificationDataModule: call setup() before asking for data loaders")
        if name not in self._splits:
            raise DataError(
                f"task {self.cfg.name}: there is no {name} split (splits: {sorted(self._splits)}); "
                "set task.test_path, or a test fraction > 0 in task.split"
            )
        return self._splits[name]

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        split = self._split(name)
        return DataLoader(
            split,
            batch_size=batch_size,
            # Seeded per epoch, so a run's batch order is reproducible whatever else has drawn random numbers,
            # and a run resumed at epoch e sees the order an uninterrupted one would.
            sampler=EpochShuffle(len(split), self.seed) if shuffle else None,
            num_workers=self.cfg.num_workers,
            collate_fn=partial(pad_collate, pad_id=int(self.tokenizer.pad_token_id)),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (see ``pad_collate`` for the batch layout)."""
        return self._loader("train", self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation batches; a list of loaders when the task has several validation sets (mnli)."""
        loaders = [
            self._loader(name, self.cfg.eval_batch_size, shuffle=False) for name in self.validation_splits
        ]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self) -> DataLoader:
        """Test batches, in split order."""
        return self._loader("test", self.cfg.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split in order; ``batch["index"]`` gives each prediction's row in the split."""
        return self._loader("test", self.cfg.eval_batch_size, shuffle=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Any split in order (e.g. MNLI's "test_mismatched", which has its own submission file)."""
        return self._loader(split, self.cfg.eval_batch_size, shuffle=False)
