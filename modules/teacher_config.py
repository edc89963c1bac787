"""The ``teacher`` config group's schema: importable without torch or transformers (``python run.py --help`` and
shell completion compose the config with it); the adapter itself is modules/teacher.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from core.dtypes import DTYPE_NAMES

# teacher.mlm_head: null / true / false as for every head, or "fit" (modules/mlm_head.py).
MLM_HEAD_CHOICES = (None, True, False, "fit")


@dataclass
class MLMHeadFitConfig:
    """``teacher.mlm_head_fit``: how ``teacher.mlm_head=fit`` trains BERT's MLM head on a head-less teacher.

    With the defaults, fitting MiniLM-L6 on the dialog corpus (seq 64, batch 32) took 46 s on 2 CPU
    cores shared with other jobs (load ~4). The teacher's forwards over ``train_batches`` +
    ``val_batches`` took 26 s of that, and the head's steps the rest. README "The teacher adapter" has
    the accuracy it reached.
    """

    steps: int = 150  # AdamW steps; step s trains on the masked tokens of training batch s % train_batches
    lr: float = 1e-3  # AdamW, decayed linearly to 0
    weight_decay: float = 0.01
    train_batches: int = 16  # distinct training batches of the data module whose teacher states are cached
    val_batches: int = 4  # held-out batches (the data module's validation split) the accuracy is measured on
    cache_dir: str = "~/.cache/distill-recipes/mlm_head"  # where fitted heads are kept, by key

    def __post_init__(self) -> None:
        for name in ("steps", "train_batches", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"teacher.mlm_head_fit.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"teacher.mlm_head_fit.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"teacher.mlm_head_fit.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class TeacherConfig:
    """Hydra schema of the ``teacher`` config group."""

    # Hub id (bert-base-uncased), local directory, or pkg://<package>/<dir> for a model shipped in a package.
    name_or_path: str = MISSING
    # null = use the head when the checkpoint has it; true = fail unless it has it; false = never use it;
    # fit = use it when the checkpoint has it, else fit BERT's MLM head on the frozen teacher
    # (modules/mlm_head.py, settings in mlm_head_fit).
    # Any: OmegaConf's structured configs take no Union[bool, str]; __post_init__ checks the value.
    mlm_head: Any = None
    nsp_head: bool | None = None
    dtype: str = "float32"
    revision: str | None = None
    mlm_head_fit: MLMHeadFitConfig = field(default_factory=MLMHeadFitConfig)

    def __post_init__(self) -> None:
        # By identity for null/true/false: 1 == True in Python, and teacher.mlm_head=1 is not a choice.
        choices = MLM_HEAD_CHOICES
        if not any(self.mlm_head is c or (isinstance(c, str) and self.mlm_head == c) for c in choices):
            raise ValueError(f"teacher.mlm_head must be one of null, true, false, fit; got {self.mlm_head!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"teacher.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if not self.name_or_path or self.name_or_path == MISSING:
            raise ValueError(
                "teacher.name_or_path is required: a hub id, a local directory or pkg://package/dir"
            )
