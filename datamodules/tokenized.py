"""Tokenised classification rows: tokenising texts or pairs into flat tensors, the ``Dataset`` over one
split, and the collate function that pads a batch to its longest row.

Why not ``datasets.Dataset.map``: the splits are tokenised once and cached by ``datamodules.task_cache``
under a key over file bytes, tokenizer and config, as a few flat int32 / int8 tensors; ``.map``'s Arrow
cache is keyed by datasets' fingerprint of the function and would neither hit the existing caches nor keep
their layout, and a fast tokenizer's batched call is already parallel in Rust.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

# Tokenise in chunks so QQP-sized splits (364k pairs) do not hold every Python list at once.
_TOKENIZE_CHUNK = 10_000


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
