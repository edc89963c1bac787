"""The ``data`` config group's schema (pre-training text): importable without torch (``python run.py --help`` and
shell completion compose the config with it); the data module is datamodules/pretraining.py."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

FORMATS = ("pairs_tsv", "lines", "dataset")


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
        if self.num_workers < 0:  # the DataLoader refuses it, after the teacher has loaded
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
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
