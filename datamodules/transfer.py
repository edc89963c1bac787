"""Unlabelled transfer text for task KD (``recipe.task_kd.transfer``, schema ``datamodules.transfer_config``): Pre-trained
Distillation's transfer set (Turc et al. 2019, Algorithm 1), read, subsampled, tokenised like the task's rows, and
appended to the training split with a per-row ``labelled`` flag, so the loss gives these rows KD and never CE.

    read_transfer_texts -> take_subsample -> tokenize_texts -> drop rows the task already has -> WithUnlabelled
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from core.assets import DataError, read_text_file, resolve_path
from datamodules.labels import unlabelled_split
from datamodules.sampling import take_subsample
from datamodules.task_files import read_examples
from datamodules.tokenized import TokenizedSplit, pad_collate, tokenize_texts
from datamodules.transfer_config import TransferDataConfig

KEY = "recipe.task_kd.transfer"


def read_transfer_texts(cfg: TransferDataConfig, text_columns: list[str]) -> list[tuple[str, ...]]:
    """The transfer rows as the task's text tuples (1 or 2 texts each, like ``task.text_columns``).

    Raises:
        FileNotFoundError / DataError: a missing or unreadable file, a format that cannot give the task's rows
            (``lines`` for a pair task), no rows.
    """
    path = resolve_path(str(cfg.path))
    width = len(text_columns)
    if cfg.format == "tsv":
        columns = list(cfg.columns or text_columns)
        if len(columns) != width:
            raise DataError(f"{KEY}.columns: {columns} gives {len(columns)} texts a row, the task reads {width}")
        if not path.exists():
            raise FileNotFoundError(f"{KEY}.path: file {path} does not exist")
        rows = [ex.texts for ex in read_examples(path, "tsv", columns, "\0no label\0", label_optional=True)]
    else:
        lines = [line for line in read_text_file(path, f"{KEY}.path").splitlines() if line.strip()]
        if cfg.format == "lines":
            if width != 1:
                raise DataError(f"{KEY}.format=lines gives single texts; task reads pairs: use pairs_tsv or tsv")
            rows = [(line.strip(),) for line in lines]
        else:  # pairs_tsv: a single-text task takes each side as a row, a pair task the pair
            pairs = [tuple(side.strip() for side in line.split("\t", 1)) for line in lines if "\t" in line]
            rows = [(side,) for pair in pairs for side in pair if side] if width == 1 else [p for p in pairs if all(p)]
    if not rows:
        raise DataError(f"{KEY}.path: {path} has no {cfg.format} rows")
    return rows


def row_keys(split: TokenizedSplit) -> set[bytes]:
    """Each row's token ids as bytes: rows that tokenise identically share a key."""
    ids = split.input_ids.to(torch.int32)
    return {ids[int(a) : int(b)].numpy().tobytes() for a, b in zip(split.offsets[:-1], split.offsets[1:])}


def build_transfer_split(
    cfg: TransferDataConfig,
    tokenizer: PreTrainedTokenizerBase,
    text_columns: list[str],
    max_seq_len: int,
    num_labels: int,
    task_splits: list[TokenizedSplit],
) -> tuple[TokenizedSplit, int]:
    """The transfer rows, tokenised as the task's, without the rows any task split already has.

    Args:
        text_columns: the task's (1 or 2); max_seq_len: the task's; num_labels: 1 = regression (label placeholders).
        task_splits: every split of the task (train, validation, test): a transfer row that tokenises as one of
            their rows is dropped (dev / test text is never trained on; train text is already there, labelled).
    Returns:
        (the split, labels all ``UNLABELLED``; how many rows were dropped as task rows).
    """
    texts = take_subsample(read_transfer_texts(cfg, text_columns), cfg.max_examples, cfg.seed)
    tokens = tokenize_texts(texts, tokenizer, max_seq_len)
    split = TokenizedSplit(**tokens, labels=unlabelled_split(len(texts), num_labels))
    taken = set().union(*(row_keys(s) for s in task_splits))
    offsets, ids = split.offsets, split.input_ids.to(torch.int32)
    keep = [i for i in range(len(split)) if ids[int(offsets[i]) : int(offsets[i + 1])].numpy().tobytes() not in taken]
    if not keep:
        raise DataError(f"{KEY}.path: every transfer row is a row of the task itself; give other text")
    return subset(split, keep), len(split) - len(keep)


def subset(split: TokenizedSplit, rows: list[int]) -> TokenizedSplit:
    """``split``'s ``rows``, in that order, as a new flat split."""
    pieces = [split[i] for i in rows]
    return TokenizedSplit(
        input_ids=torch.cat([p["input_ids"] for p in pieces]),
        token_type_ids=torch.cat([p["token_type_ids"] for p in pieces]),
        lengths=split.lengths[rows],
        labels=split.labels[rows],
    )


class WithUnlabelled(Dataset):
    """The training split followed by unlabelled rows; each item says whether it has a gold label.

    Item ``i < len(labelled)`` is the training row ``i``, later items the unlabelled rows; ``index`` is the
    position in this joint dataset.
    """

    def __init__(self, labelled: TokenizedSplit, unlabelled: TokenizedSplit) -> None:
        self.labelled, self.unlabelled = labelled, unlabelled
        self.lengths = torch.cat([labelled.lengths, unlabelled.lengths])

    def __len__(self) -> int:
        return len(self.labelled) + len(self.unlabelled)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.labelled)
        item = self.labelled[i] if i < n else self.unlabelled[i - n]
        return {**item, "index": i, "labelled": i < n}


def collate_with_labelled(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """``pad_collate`` plus ``labelled``: (B,) bool, False for the transfer rows (no CE on them)."""
    return {**pad_collate(items, pad_id), "labelled": torch.tensor([item["labelled"] for item in items])}
