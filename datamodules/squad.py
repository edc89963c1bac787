"""Extractive question answering data (SQuAD v1.1): the QA ``task`` config and its data module.

    read_squad -> check_answers -> featurize (doc-stride windows, offset mapping, span labels) -> cache
    (squad_files)                  (squad_features)                                             (task_cache)

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

from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from core.assets import DataError
from datamodules.sampling import EpochShuffle, take_subsample
from datamodules.squad_features import QASplit, featurize, qa_collate
from datamodules.squad_files import QAExample, check_answers, flat_example, read_squad
from datamodules.task_cache import load_cache, load_or_build
from datamodules.task_config import QATaskConfig  # noqa: F401  (public here too)

# Bumped when the cache payload layout changes.
CACHE_VERSION = 1
# Hashed into the cache key. It has always been the classification cache's version (2), as the key function
# came from there; kept so that caches written before still hit. Bump it with CACHE_VERSION from now on.
_KEY_VERSION = 2

_LOCAL_FILES = {"train": "train_path", "validation": "validation_path"}


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
    questions that post-processing answers; predictions are keyed by their ``id``), ``cache_path``,
    ``from_cache``. There is no test split: SQuAD's is hidden, so the dev answers are the predictions.
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
        """Read, check, subsample and featurise both splits (or load all of that from the cache). Runs once."""
        if self._splits:
            return
        data = load_or_build(
            self.cfg,
            self.tokenizer,
            hub=load_squad if self.cfg.source == "squad" else None,
            file_fields=_LOCAL_FILES,
            build=self._build,
            version=CACHE_VERSION,
            key_version=_KEY_VERSION,
            kind="qa",
            what="featurised",
        )
        self.cache_path, self.from_cache = data.path, data.from_cache
        payload = data.payload
        self.examples = {role: [QAExample(**ex) for ex in rows] for role, rows in payload["examples"].items()}
        self._splits = {role: QASplit(**tensors) for role, tensors in payload["splits"].items()}
        self.split_sizes = {role: len(split) for role, split in self._splits.items()}

    def _build(self, dataset: Any, files: dict[str, Path]) -> dict[str, Any]:
        payload: dict[str, Any] = {"examples": {}, "splits": {}}
        for role in ("train", "validation"):
            if dataset is not None:
                examples = [flat_example(r, f"squad/{role}") for r in dataset[role]]
                where = f"squad/{role}"
            else:
                examples, where = read_squad(files[role]), str(files[role])
            check_answers(examples, where)
            examples = take_subsample(examples, self.cfg.max_examples, self.cfg.split_seed)
            payload["splits"][role] = featurize(examples, self.tokenizer, self.cfg, train=role == "train")
            payload["examples"][role] = [vars(ex) for ex in examples]
        return payload

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
        """Shuffled training windows (see ``qa_collate`` for the batch layout)."""
        return self._loader("train", self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation windows in order, with their context offsets for post-processing."""
        return self._loader("validation", self.cfg.eval_batch_size, shuffle=False)
