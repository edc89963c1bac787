"""The ``task`` config group's schema for classification / regression tasks (``conf/task/*.yaml``):
which data, how it is read and split, and the checks that run when the config is read (before any file
is opened or model built). The data module that uses it: ``datamodules.classification``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from datamodules.glue import GLUE_TASKS
from datamodules.task_cache import check_loader_fields
from datamodules.task_files import FORMATS, infer_format


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
