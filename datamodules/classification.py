"""Sentence and sentence-pair classification / regression data: the data module of the ``task`` group
(its config schema: ``datamodules.task_config.TaskDataConfig``).

``ClassificationDataModule.setup`` runs a chain of small pure functions, once, through the cache:

    read_examples -> parse_labels -> split_indices -> encode_labels -> tokenize_texts -> cache
    (task_files)     (labels)        (sampling)       (labels)         (tokenized)       (task_cache)

Local files (TSV, CSV, JSONL) are the offline default; ``source: glue`` loads the GLUE benchmark with
``datasets.load_dataset`` where there is a network (``datamodules.glue_loading``). Every data problem is
raised as ``DataError`` naming the file, the line and the value before any training starts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from core.assets import DataError
from datamodules.glue_loading import build_glue, load_glue
from datamodules.labels import encode_labels, label_names_for, parse_labels, unlabelled_split
from datamodules.sampling import EpochShuffle, LengthGroupedShuffle, split_indices, take_subsample
from datamodules.task_cache import load_cache, load_or_build
from datamodules.task_config import TaskDataConfig
from datamodules.task_files import RawExample, SourceRows, infer_format, read_examples
from datamodules.tokenized import TokenizedSplit, pad_collate, tokenize_texts
from datamodules.transfer import WithUnlabelled, build_transfer_split, collate_with_labelled
from datamodules.transfer_config import TransferDataConfig

# Bumped when the cache payload layout changes, so stale files are never read as the new layout.
CACHE_VERSION = 3  # 2: GLUE MNLI's test_mismatched split; 3: "labelled" and "rows" (source row identity)


# ------------------------------------------------------------------------------------------ local files

# Split role -> config field of its file: one file split by cfg.split, or one file per split.
_ONE_FILE = {"all": "path"}
_FILE_PER_SPLIT = {"train": "train_path", "validation": "validation_path", "test": "test_path"}


def read_local_splits(
    cfg: TaskDataConfig, files: dict[str, Path]
) -> tuple[dict[str, list[RawExample]], dict[str, Path], set[str]]:
    """Read, label-parse, split (one file) or subsample (a file per split) the local files.

    Args:
        cfg: the task config.
        files: split role -> existing file; "all" for one file split by ``cfg.split``.

    Returns:
        (split -> rows with parsed labels, each keeping its source identity (``RawExample.index`` / ``line``
        / ``id``); split -> the file its rows came from; the unlabelled splits: a test file without the
        label column).

    Raises:
        DataError: as ``read_examples`` / ``parse_labels``, and a split left empty.
    """
    fmt = {role: infer_format(str(p), cfg.format) for role, p in files.items()}
    parsed: dict[str, list[RawExample]] = {}
    unlabelled: set[str] = set()
    for role, path in files.items():
        raw = read_examples(path, fmt[role], cfg.text_columns, cfg.label_column, label_optional=role == "test")
        if all(ex.label is None for ex in raw):  # only a test file may lack the label column
            parsed[role] = raw
            unlabelled.add(role)
            continue
        kept, dropped = parse_labels(raw, cfg.num_labels, cfg.binarize_at, path)
        if not kept:
            raise DataError(
                f"{path}: no rows left after filtering ({len(raw)} read, {dropped} dropped with a "
                f"label exactly at task.binarize_at={cfg.binarize_at})"
            )
        parsed[role] = kept

    if "all" not in parsed:
        # A seeded subset rather than the first rows: files are often sorted by label.
        subsets = {
            role: take_subsample(rows, cfg.max_examples, cfg.split_seed) for role, rows in parsed.items()
        }
        return subsets, files, unlabelled
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
    return parsed, dict.fromkeys(parsed, files["all"]), unlabelled


def build_local(
    cfg: TaskDataConfig, files: dict[str, Path], tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    """Every split of a local task, labelled and tokenised.

    Returns:
        ``{"label_names": [...], "splits": {split: tokenize_texts(...) + "labels"}, "labelled": {split: bool},
        "rows": {split: vars(SourceRows)}}``; label names are decided by the training split ([] for
        regression).

    Raises:
        DataError: as ``read_local_splits`` / ``label_names_for`` / ``encode_labels``.
    """
    parsed, source, unlabelled = read_local_splits(cfg, files)
    label_names = (
        []
        if cfg.num_labels == 1
        else label_names_for([ex.label for ex in parsed["train"]], cfg.num_labels, source["train"])
    )
    splits = {}
    for role, rows in parsed.items():
        labels = (
            unlabelled_split(len(rows), cfg.num_labels)
            if role in unlabelled
            else encode_labels(rows, cfg.num_labels, label_names, source[role])
        )
        splits[role] = {
            **tokenize_texts([ex.texts for ex in rows], tokenizer, cfg.max_seq_len),
            "labels": labels,
        }
    return {
        "label_names": label_names,
        "splits": splits,
        "labelled": {role: role not in unlabelled for role in parsed},
        "rows": {role: vars(SourceRows.of(rows)) for role, rows in parsed.items()},
    }


# ------------------------------------------------------------------------------------------- datamodule


class ClassificationDataModule(LightningDataModule):
    """Sentence / sentence-pair classification or regression, tokenised once and cached on disk.

    After ``setup()``: ``num_labels``, ``label_names`` (index = label id; ``[]`` for regression),
    ``split_sizes`` (split name -> rows), ``labelled`` (split name -> whether it has gold labels, decided by how
    it was loaded), ``source_rows`` (split name -> each row's identity in its source, ``SourceRows``),
    ``cache_path`` and ``from_cache``.

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
        self.labelled: dict[str, bool] = {}
        self.source_rows: dict[str, SourceRows] = {}
        self.cache_path: Path | None = None
        self.from_cache = False
        self.validation_splits: list[str] = ["validation"]
        self.test_splits: list[str] = []
        self._splits: dict[str, TokenizedSplit] = {}
        # Unlabelled rows that join the training batches (task KD's transfer set, datamodules/transfer.py): they
        # carry ``labelled=False``, so the loss gives them KD and no CE. Set after ``setup()``; None: none.
        self.unlabelled: TokenizedSplit | None = None

    # ----------------------------------------------------------------------------------- setup

    def setup(self, stage: str | None = None) -> None:
        """Read, filter, split, tokenise (or load all of that from the cache). Runs once."""
        if self._splits:
            return
        cfg = self.cfg
        glue = cfg.source == "glue"
        data = load_or_build(
            cfg,
            self.tokenizer,
            hub=partial(load_glue, str(cfg.glue_task)) if glue else None,
            file_fields=_ONE_FILE if cfg.path is not None else _FILE_PER_SPLIT,
            build=self._build,
            version=CACHE_VERSION,
            key_version=CACHE_VERSION,
            kind="",
            what="tokenised",
        )
        self.cache_path, self.from_cache = data.path, data.from_cache
        self.label_names = list(data.payload["label_names"])
        self._splits = {name: TokenizedSplit(**tensors) for name, tensors in data.payload["splits"].items()}
        self.split_sizes = {name: len(split) for name, split in self._splits.items()}
        self.labelled = dict(data.payload["labelled"])
        self.source_rows = {name: SourceRows(**rows) for name, rows in data.payload["rows"].items()}
        self.validation_splits = [n for n in self._splits if n.startswith("validation")]
        self.test_splits = [n for n in self._splits if n.startswith("test")]

    def _build(self, dataset: Any, files: dict[str, Path]) -> dict[str, Any]:
        cfg = self.cfg
        if dataset is None:
            return build_local(cfg, files, self.tokenizer)
        return build_glue(
            dataset,
            str(cfg.glue_task),
            self.tokenizer,
            max_seq_len=cfg.max_seq_len,
            max_examples=cfg.max_examples,
            seed=cfg.split_seed,
        )

    def _load_cache(self, path: Path) -> dict[str, Any] | None:
        return load_cache(path, CACHE_VERSION, self.cfg.name)

    def add_transfer(self, transfer: TransferDataConfig) -> int:
        """Join ``transfer``'s unlabelled rows to the training batches (``unlabelled``), tokenised as the task's.

        Returns:
            how many transfer rows were dropped because a task split (train, dev or test) has them.
        """
        self._split("train")
        self.unlabelled, dropped = build_transfer_split(
            transfer, self.tokenizer, list(self.cfg.text_columns), self.cfg.max_seq_len, self.num_labels,
            list(self._splits.values()),
        )  # fmt: skip
        return dropped

    @property
    def test_labelled(self) -> bool:
        """Whether the test split has gold labels: decided when it was loaded (GLUE's test labels are hidden; a
        local test file may lack the label column), never by a label's value (-1.0 is a real score)."""
        self._split("test")
        return self.labelled["test"]

    @property
    def id2label(self) -> dict[int, str]:
        """Label id -> name for a saved classifier's config (``config.id2label``): ``label_names`` (string labels
        sorted, GLUE's names, or the int labels as "0", "1", ...); an id no training row has keeps Hugging Face's
        ``LABEL_<id>``. ``{}`` for regression."""
        if self.num_labels == 1:
            return {}
        names = self.label_names
        return {i: names[i] if i < len(names) else f"LABEL_{i}" for i in range(self.num_labels)}

    @property
    def label2id(self) -> dict[str, int]:
        """The inverse of ``id2label`` (``config.label2id``)."""
        return {name: i for i, name in self.id2label.items()}

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
        split: TokenizedSplit | WithUnlabelled = self._split(name)
        collate = pad_collate
        if name == "train" and shuffle and self.unlabelled is not None:
            split, collate = WithUnlabelled(split, self.unlabelled), collate_with_labelled
        # Seeded per epoch, so a run's batch order is reproducible whatever else has drawn random numbers,
        # and a run resumed at epoch e sees the order an uninterrupted one would.
        if not shuffle:
            sampler = None
        elif self.cfg.group_by_length:
            sampler = LengthGroupedShuffle(split.lengths.tolist(), batch_size, self.seed)
        else:
            sampler = EpochShuffle(len(split), self.seed)
        return DataLoader(
            split,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=partial(collate, pad_id=int(self.tokenizer.pad_token_id)),
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
        """The test split in order; ``batch["index"]`` gives each prediction's row in the split, and
        ``source_rows["test"]`` that row's place in its source file."""
        return self._loader("test", self.cfg.eval_batch_size, shuffle=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Any split in order (e.g. MNLI's "test_mismatched", which has its own submission file)."""
        return self._loader(split, self.cfg.eval_batch_size, shuffle=False)
