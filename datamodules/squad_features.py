"""SQuAD features: each question + context cut into overlapping windows (doc stride), with the answer's token
span (training) or each context token's character offsets (evaluation); the ``Dataset`` over one featurised
split and the collate function that pads a batch of windows.

Why not ``datasets.Dataset.map`` (Hugging Face's ``prepare_train_features``): the windows are built once and
cached by ``datamodules.task_cache`` as a few flat tensors under a content key; ``.map``'s Arrow cache is
keyed differently and would not find those caches, and the fast tokenizer's batched call is already
parallel in Rust.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from datamodules.squad_files import QAExample

# Offsets of tokens that are not context (question, special tokens, padding): never part of an answer.
NOT_CONTEXT = -1


class WindowConfig(Protocol):
    """The fields of a QA task config (``datamodules.squad.QATaskConfig``) that shape the windows."""

    max_seq_len: int  # question + context window, special tokens included
    doc_stride: int  # tokens that consecutive windows share
    max_query_len: int  # longer questions are cut to this many tokens


def truncate_questions(
    questions: list[str], tokenizer: PreTrainedTokenizerBase, max_query_len: int
) -> list[str]:
    """Cut each question after its first ``max_query_len`` tokens (BERT's max_query_length), by characters."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        out.append(question[: offsets[max_query_len - 1][1]] if len(offsets) > max_query_len else question)
    return out


# Featurise this many questions at a time: a whole SQuAD split at once holds tens of millions of offset tuples.
_FEATURIZE_CHUNK = 2_000


def featurize(
    examples: list[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    cfg: WindowConfig,
    train: bool,
) -> dict[str, torch.Tensor]:
    """Windows over each context, with span labels (train) or context offsets (evaluation).

    Args:
        examples: the questions, in split order.
        tokenizer: a *fast* tokenizer (the offset mapping comes from it).
        cfg: max_seq_len, doc_stride, max_query_len.
        train: label each window with the first gold answer's token span ([CLS] = 0 where not inside).

    Returns:
        Flat, unpadded rows like ``TokenizedSplit``: input_ids (T,) int32, token_type_ids (T,) int8,
        offsets (T, 2) int32 = character span of each context token in its context, NOT_CONTEXT elsewhere,
        lengths (F,) int32, example_index (F,) int64, start_positions / end_positions (F,) int64.
    """
    chunks = []
    for start in range(0, len(examples), _FEATURIZE_CHUNK):
        chunk = _featurize_chunk(examples[start : start + _FEATURIZE_CHUNK], tokenizer, cfg, train)
        chunk["example_index"] += start
        chunks.append(chunk)
    return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


def _featurize_chunk(
    examples: list[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    cfg: WindowConfig,
    train: bool,
) -> dict[str, torch.Tensor]:
    questions = truncate_questions([ex.question for ex in examples], tokenizer, cfg.max_query_len)
    encoded = tokenizer(
        questions,
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=cfg.max_seq_len,
        stride=cfg.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    input_ids, token_type_ids, offsets, lengths, example_index, starts, ends = [], [], [], [], [], [], []
    for f, ids in enumerate(encoded["input_ids"]):
        ex = int(encoded["overflow_to_sample_mapping"][f])
        sequence_ids = encoded.sequence_ids(f)
        spans = [
            tuple(o) if s == 1 else (NOT_CONTEXT, NOT_CONTEXT)
            for o, s in zip(encoded["offset_mapping"][f], sequence_ids)
        ]
        start = end = 0
        if train:
            start, end = answer_token_span(spans, examples[ex].answer_starts[0], examples[ex].answers[0])
        input_ids.extend(ids)
        token_type_ids.extend(encoded["token_type_ids"][f])
        offsets.extend(spans)
        lengths.append(len(ids))
        example_index.append(ex)
        starts.append(start)
        ends.append(end)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.int32),
        "token_type_ids": torch.tensor(token_type_ids, dtype=torch.int8),
        "offsets": torch.tensor(offsets, dtype=torch.int32).reshape(-1, 2),
        "lengths": torch.tensor(lengths, dtype=torch.int32),
        "example_index": torch.tensor(example_index, dtype=torch.long),
        "start_positions": torch.tensor(starts, dtype=torch.long),
        "end_positions": torch.tensor(ends, dtype=torch.long),
    }


def answer_token_span(spans: list[tuple[int, int]], answer_start: int, answer: str) -> tuple[int, int]:
    """Token positions (start, end), inclusive, of the answer's characters in one window; (0, 0) = [CLS]
    when the window does not hold the whole answer (SQuAD v1.1 training, as in BERT)."""
    answer_end = answer_start + len(answer)  # exclusive
    context = [i for i, (s, _) in enumerate(spans) if s != NOT_CONTEXT]
    if not context or spans[context[0]][0] > answer_start or spans[context[-1]][1] < answer_end:
        return 0, 0
    start = next(i for i in context if spans[i][1] > answer_start)
    end = next(i for i in reversed(context) if spans[i][0] < answer_end)
    return start, end


# ---------------------------------------------------------------------------------------------- dataset


class QASplit(Dataset):
    """One featurised split; item ``i`` is feature (window) ``i``, unpadded."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.t = tensors
        self.bounds = torch.cat([torch.zeros(1, dtype=torch.long), tensors["lengths"].long().cumsum(0)])

    def __len__(self) -> int:
        return len(self.t["lengths"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        start, end = int(self.bounds[i]), int(self.bounds[i + 1])
        return {
            "input_ids": self.t["input_ids"][start:end],  # (L,)
            "token_type_ids": self.t["token_type_ids"][start:end],  # (L,)
            "offsets": self.t["offsets"][start:end],  # (L, 2)
            "start_positions": self.t["start_positions"][i],
            "end_positions": self.t["end_positions"][i],
            "example_index": self.t["example_index"][i],
        }


def qa_collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch windows, right-padded to the longest of this batch.

    Returns:
        input_ids, attention_mask, token_type_ids: (B, S) int64; offsets: (B, S, 2) int64 (NOT_CONTEXT on
        padding); start_positions, end_positions, example_index: (B,) int64.
    """
    longest = max(len(item["input_ids"]) for item in items)
    batch = {
        "input_ids": torch.full((len(items), longest), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(items), longest), dtype=torch.long),
        "token_type_ids": torch.zeros((len(items), longest), dtype=torch.long),
        "offsets": torch.full((len(items), longest, 2), NOT_CONTEXT, dtype=torch.long),
    }
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][row, :n] = item["input_ids"]
        batch["attention_mask"][row, :n] = 1
        batch["token_type_ids"][row, :n] = item["token_type_ids"]
        batch["offsets"][row, :n] = item["offsets"]
    for key in ("start_positions", "end_positions", "example_index"):
        batch[key] = torch.stack([item[key] for item in items])
    return batch
