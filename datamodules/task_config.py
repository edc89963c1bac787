"""The ``task`` config group's schemas: classification / regression tasks (``conf/task/*.yaml``, data module
``datamodules.classification``) and question answering (``task=squad``, ``QATaskConfig``, data module
``datamodules.squad``): which data, how it is read and split, and the checks that run when the config is read
(before any file is opened or model built). Importable without torch: ``python run.py --help`` and shell
completion compose the config with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from datamodules.glue import GLUE_TASKS
from datamodules.task_files import FORMATS, infer_format


def check_loader_fields(cfg: Any) -> None:
    """The loader settings every task config shares (``task.batch_size``, ``task.eval_batch_size``,
    ``task.num_workers``, ``task.max_examples``), checked when the config is read.

    Raises:
        ValueError: naming the field and the allowed range.
    """
    for name in ("batch_size", "eval_batch_size"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"task.{name}: must be > 0, got {getattr(cfg, name)}")
    if cfg.num_workers < 0:
        raise ValueError(f"task.num_workers: must be >= 0, got {cfg.num_workers}")
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise ValueError(f"task.max_examples: must be >= 1, or null for no cap, got {cfg.max_examples}")


@dataclass
class TaskDataConfig:
    """Schema of the ``task`` config group: which data, how it is read, split, tokenised and batched.

    For ``source: glue`` the text columns, label column and ``num_labels`` are facts of the GLUE
    task and are derived from ``datamodules.glue.GLUE_TASKS`` in ``__post_init__`` (YAML need not set them).
    """

    name: str = MISSING  # display name, e.g. "sentiment", "sst2"
    source: str = "local"  # "local" (files) or "glue" (datasets.load_dataset("glue", glue_task))
    glue_task: str | None = None  # one of GLUE_TASKS when source=glue
    path: str | None = None  # one local file split into train/validation/test by `split`
    train_path: str | None = None  # or explicit per-split files (train and validation required)
    validation_path: str | None = None
    test_path: str | None = None  # may lack the label column: then the test split is unlabelled
    format: str | None = None  # tsv | csv | jsonl; None = from each file's suffix
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
    # training batches of similar lengths (HF's group_by_length): less padding, the same rows per epoch
    group_by_length: bool = True
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
        check_loader_fields(self)
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
        task = GLUE_TASKS[self.glue_task]
        self.text_columns = list(task.text_columns)
        self.label_column = "label"
        self.num_labels = task.num_labels

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
class QATaskConfig:
    """Schema of a question-answering ``task`` (``task=squad``, or a local file in SQuAD's layout)."""

    name: str = MISSING  # display name, e.g. "squad"
    source: str = "squad"  # "squad" (datasets.load_dataset("squad")) or "local" (the files below)
    train_path: str | None = None  # local: SQuAD v1.1 JSON (.json) or flat JSONL (.jsonl)
    validation_path: str | None = None
    max_seq_len: int = 384  # question + context window, special tokens included (BERT's SQuAD setting)
    doc_stride: int = 128  # tokens that consecutive windows share (Hugging Face's `stride`)
    max_query_len: int = 64  # longer questions are cut to this many tokens
    max_answer_len: int = 30  # the longest span (tokens) post-processing may answer
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0
    max_examples: int | None = None  # cap on questions per split (seeded subset), for demo scale
    split_seed: int = 0
    cache_dir: str = "~/.cache/distill-recipes/tasks"

    def __post_init__(self) -> None:
        if not self.name or self.name == MISSING:
            raise ValueError("task.name: required; set a display name such as 'squad'")
        if self.source == "squad":
            for name in ("train_path", "validation_path"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"task.{name}: not used when source=squad; remove it or set source=local"
                    )
        elif self.source == "local":
            for name in ("train_path", "validation_path"):
                value = getattr(self, name)
                if value is None:
                    raise ValueError(f"task.{name}: required when task.source=local (a .json or .jsonl file)")
                if Path(value).suffix.lower() not in (".json", ".jsonl"):
                    raise ValueError(
                        f"task.{name}: {value!r} must be SQuAD v1.1 JSON (.json) or flat JSONL (.jsonl)"
                    )
        else:
            raise ValueError(f"task.source: must be 'squad' or 'local' for a QA task, got {self.source!r}")
        if self.max_query_len < 1:
            raise ValueError(f"task.max_query_len: must be >= 1, got {self.max_query_len}")
        # [CLS] question [SEP] context [SEP]: a window must hold the longest question and some context.
        if self.max_seq_len < self.max_query_len + 3 + 8:
            raise ValueError(
                f"task.max_seq_len: must be >= task.max_query_len + 11 = {self.max_query_len + 11} "
                f"(special tokens and at least 8 context tokens), got {self.max_seq_len}"
            )
        context_room = self.max_seq_len - self.max_query_len - 3
        if not 0 <= self.doc_stride < context_room:
            raise ValueError(
                f"task.doc_stride: the overlap between windows must be in [0, {context_room}) "
                f"(max_seq_len - max_query_len - 3), got {self.doc_stride}"
            )
        if self.max_answer_len < 1:
            raise ValueError(f"task.max_answer_len: must be >= 1, got {self.max_answer_len}")
        check_loader_fields(self)
