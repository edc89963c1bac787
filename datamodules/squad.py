"""Extractive question answering data (SQuAD v1.1): long contexts cut into overlapping windows.

    read_squad -> check_answers -> featurize (doc-stride windows, offset mapping, span labels) -> cache

A question + context pair longer than ``max_seq_len`` becomes several *features* (windows over the
context that overlap by ``doc_stride`` tokens); training labels each window with the answer's token
span, or with [CLS] (position 0) when the answer is not wholly inside it. Evaluation keeps, for each
feature, the character offsets of its context tokens, so ``modules.qa.best_spans`` can map the best
span of every window back to context text and keep the best window per question.

Sources: ``squad`` (``datasets.load_dataset("squad")``, needs a network) or ``local`` files in the
official SQuAD v1.1 JSON layout (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``) or JSONL
in the flat Hugging Face layout (one ``{"id", "question", "context", "answers": {"text": [...],
"answer_start": [...]}}`` per line). Every data problem is a ``DataError`` naming the file and the id.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import MISSING
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from core.assets import DataError, decode_utf8, file_fingerprint, resolve_path
from core.files import torch_save_atomic
from datamodules.classification import EpochShuffle, cache_key, load_cache, subsample

log = logging.getLogger(__name__)

# Bumped when the cache payload layout changes.
CACHE_VERSION = 1

# Offsets of tokens that are not context (question, special tokens, padding): never part of an answer.
NOT_CONTEXT = -1


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
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"task.{name}: must be > 0, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"task.num_workers: must be >= 0, got {self.num_workers}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"task.max_examples: must be >= 1, or null for no cap, got {self.max_examples}")


@dataclass
class QAExample:
    """One question about one context; ``answers`` are the gold texts (SQuAD dev has up to 3 per question)."""

    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]


# --------------------------------------------------------------------------------------------- reading


def read_squad(path: Path) -> list[QAExample]:
    """Questions from a SQuAD v1.1 JSON file or a flat JSONL file.

    Raises:
        DataError: not JSON, not the SQuAD layout, missing keys (named with the question id).
    """
    text = decode_utf8(path)
    if path.suffix.lower() == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path} line {line_no}: not valid JSON ({err.msg})") from err
        return [_flat_example(r, f"{path} line {i}") for i, r in enumerate(records, start=1)]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(
            f"{path}: expected SQuAD v1.1 JSON, an object with a 'data' list of articles "
            '({"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [...]}]}]}); '
            "for one question per line use .jsonl"
        )
    examples = []
    for a, article in enumerate(document["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs", []), list):
            raise DataError(f"{path} data[{a}]: an article must be an object with a 'paragraphs' list")
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path} data[{a}].paragraphs[{p}]"
            if (
                not isinstance(paragraph, dict)
                or not isinstance(paragraph.get("context"), str)
                or not isinstance(paragraph.get("qas"), list)
            ):
                raise DataError(f"{where}: needs a 'context' string and a 'qas' list")
            for qa in paragraph["qas"]:
                if not isinstance(qa, dict):
                    raise DataError(
                        f"{where}: every entry of 'qas' must be an object, got {type(qa).__name__}"
                    )
                answers = qa.get("answers")
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    raise DataError(f"{where} question {qa.get('id')!r}: 'answers' must be a list of objects")
                flat = {**qa, "context": paragraph["context"], "answers": {
                    "text": [x.get("text") for x in answers],
                    "answer_start": [x.get("answer_start") for x in answers]}}  # fmt: skip
                examples.append(_flat_example(flat, where))
    if not examples:
        raise DataError(f"{path}: no questions found")
    return examples


def _flat_example(record: Any, where: str) -> QAExample:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("id", "question", "context", "answers") if k not in record]
    if missing:
        raise DataError(f"{where}: key(s) {missing} not found; the object has keys {sorted(record)}")
    answers = record["answers"]
    if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers):
        raise DataError(
            f"{where} question {record['id']!r}: 'answers' must be "
            '{"text": [...], "answer_start": [...]} (JSONL) or a list of {"text", "answer_start"} (JSON)'
        )
    texts, starts = list(answers["text"]), list(answers["answer_start"])
    if not texts or len(texts) != len(starts):
        raise DataError(
            f"{where} question {record['id']!r}: needs at least one answer and as many answer_start "
            f"values as texts, got {len(texts)} texts and {len(starts)} starts"
        )
    if not all(isinstance(t, str) for t in texts) or not all(isinstance(s, int) for s in starts):
        raise DataError(
            f"{where} question {record['id']!r}: answer texts must be strings and answer_start integers"
        )
    return QAExample(str(record["id"]), str(record["question"]), str(record["context"]), texts, starts)


def check_answers(examples: list[QAExample], where: str) -> None:
    """Every gold answer must be the context's text at its ``answer_start``: a mismatch (an offset counted
    in bytes, or in a differently normalised context) would silently train the model on the wrong span."""
    ids = set()
    for ex in examples:
        if ex.id in ids:
            raise DataError(f"{where}: question id {ex.id!r} appears twice; ids must be unique")
        ids.add(ex.id)
        for text, start in zip(ex.answers, ex.answer_starts):
            if not text.strip():
                raise DataError(
                    f"{where} question {ex.id!r}: an answer text is empty; SQuAD v1.1 answers are spans"
                )
            found = ex.context[start : start + len(text)]
            if found != text:
                raise DataError(
                    f"{where} question {ex.id!r}: answer {text!r} is not at answer_start={start} "
                    f"(the context has {found!r} there); answer_start counts characters of the context"
                )


# ------------------------------------------------------------------------------------------ featurising


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
    cfg: QATaskConfig,
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
    cfg: QATaskConfig,
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


def load_squad() -> Any:
    """``datasets.load_dataset("squad")`` (v1.1); needs a network (or a warm datasets cache).

    Raises:
        DataError: the data set cannot be loaded; the message says how to run offline instead.
    """
    import datasets

    try:
        return datasets.load_dataset("squad")
    except Exception as err:  # connection failures surface as many exception types across versions
        raise DataError(
            f"task.source=squad: datasets.load_dataset('squad') failed ({type(err).__name__}: {err}). "
            "SQuAD needs network access the first time; offline, set task.source=local with "
            "task.train_path / task.validation_path in SQuAD v1.1 JSON"
        ) from err


class SquadDataModule(LightningDataModule):
    """SQuAD v1.1-style extractive QA, featurised once and cached on disk.

    After ``setup()``: ``split_sizes`` (features per split), ``examples`` (split -> ``QAExample`` list, the
    questions that post-processing answers), ``cache_path``, ``from_cache``.
    """

    validation_splits = ["validation"]

    def __init__(self, cfg: QATaskConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> None:
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"tokenizer: {type(tokenizer).__name__} is not a fast tokenizer; SQuAD windows need the "
                "offset mapping only fast (Rust) tokenizers give (AutoTokenizer(..., use_fast=True))"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "tokenizer: has no pad token, which dynamic padding needs; set tokenizer.pad_token"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.seed = seed
        self.examples: dict[str, list[QAExample]] = {}
        self.split_sizes: dict[str, int] = {}
        self.cache_path: Path | None = None
        self.from_cache = False
        self._splits: dict[str, QASplit] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        if self.cfg.source == "squad":
            dataset = load_squad()
            sources = {name: split._fingerprint for name, split in dataset.items()}
        else:
            dataset = None
            files = {}
            for role in ("train", "validation"):
                value = getattr(self.cfg, f"{role}_path")
                path = resolve_path(value)
                if not path.is_file():
                    raise FileNotFoundError(f"task.{role}_path: file not found: {path} (from {value!r})")
                files[role] = path
            sources = {role: file_fingerprint(p) for role, p in files.items()}
        key = cache_key(self.cfg, sources, self.tokenizer)  # type: ignore[arg-type]  (any dataclass config)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.cfg.name)
        self.cache_path = resolve_path(self.cfg.cache_dir) / f"{safe_name}-qa-{key[:24]}.pt"
        payload = self._load_cache(self.cache_path)
        self.from_cache = payload is not None
        if payload is None:
            payload = {"version": CACHE_VERSION, "examples": {}, "splits": {}}
            for role in ("train", "validation"):
                if dataset is not None:
                    examples = [_flat_example(r, f"squad/{role}") for r in dataset[role]]
                    where = f"squad/{role}"
                else:
                    examples, where = read_squad(files[role]), str(files[role])
                check_answers(examples, where)
                examples = [
                    examples[i] for i in subsample(len(examples), self.cfg.max_examples, self.cfg.split_seed)
                ]
                payload["splits"][role] = featurize(examples, self.tokenizer, self.cfg, train=role == "train")
                payload["examples"][role] = [vars(ex) for ex in examples]
            torch_save_atomic(payload, self.cache_path)
            log.info("task %s: featurised and cached to %s", self.cfg.name, self.cache_path)
        self.examples = {role: [QAExample(**ex) for ex in rows] for role, rows in payload["examples"].items()}
        self._splits = {role: QASplit(**tensors) for role, tensors in payload["splits"].items()}
        self.split_sizes = {role: len(split) for role, split in self._splits.items()}

    def _load_cache(self, path: Path) -> dict[str, Any] | None:
        return load_cache(path, CACHE_VERSION, self.cfg.name)

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        if not self._splits:
            raise RuntimeError("SquadDataModule: call setup() before asking for data loaders")
        return DataLoader(
            self._splits[name],
            batch_size=batch_size,
            # the classification loader's order per (seed, epoch): the same as RandomSampler's, resumable
            sampler=EpochShuffle(len(self._splits[name]), self.seed) if shuffle else None,
            num_workers=self.cfg.num_workers,
            collate_fn=partial(qa_collate, pad_id=int(self.tokenizer.pad_token_id)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.cfg.eval_batch_size, shuffle=False)
