"""Tokenised sentence pairs, stored flat: every example's token ids and segment ids concatenated, with the
offsets that cut them apart, so a corpus is a few tensors in the cache rather than millions of small ones.

Why not ``datasets.Dataset.map``: the pairs are tokenised once and cached by ``datamodules.pretraining``
under a key over the source bytes, tokenizer and config, in this flat layout; ``.map``'s Arrow cache is keyed
by a hash of the function, would not find the caches already written, and a fast tokenizer's batched call
is already parallel in Rust.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedPairs:
    """Variable-length examples packed flat: example i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: torch.Tensor  # (total,) int32
    token_types: torch.Tensor  # (total,) int8
    offsets: torch.Tensor  # (N + 1,) int64
    nsp_labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.nsp_labels)

    def example(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Example ``i``'s token ids (L,) int32 and segment ids (L,) int8, unpadded."""
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.ids[start:end], self.token_types[start:end]


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    first: list[str],
    second: list[str],
    labels: list[int],
    max_seq_len: int,
) -> TokenizedPairs:
    """Tokenise N pairs as ``[CLS] first [SEP] second [SEP]``, truncated longest-first to ``max_seq_len``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        first, second: N segments each.
        labels: N NSP labels (0 = real next, 1 = random).
        max_seq_len: the longest encoded pair, special tokens included.

    Returns:
        The pairs packed flat (see ``TokenizedPairs``).
    """
    enc = tokenizer(
        first, second, truncation="longest_first", max_length=max_seq_len, return_token_type_ids=True
    )
    lengths = torch.tensor([len(x) for x in enc["input_ids"]], dtype=torch.int64)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    return TokenizedPairs(
        ids=torch.tensor([t for x in enc["input_ids"] for t in x], dtype=torch.int32),
        token_types=torch.tensor([t for x in enc["token_type_ids"] for t in x], dtype=torch.int8),
        offsets=offsets,
        nsp_labels=torch.tensor(labels, dtype=torch.int64),
    )
