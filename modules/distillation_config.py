"""The distillation recipes' nested config schemas (``recipe.losses``, ``recipe.layer_map``, ``recipe.teacher_cache``,
``recipe.probe``): importable without torch (``python run.py --help`` and shell completion compose the config
with them). What uses them: modules/distillation.py, modules/losses.py, modules/teacher_cache.py, modules/probe.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.dtypes import DTYPE_NAMES

LAYER_MAPS = ("uniform", "last", "explicit")


@dataclass
class LossWeights:
    """Weights of the distillation losses (AutoDistill §3.3): per block stage ``attention·L_MHA + feature·L_FM``;
    in pre-training ``L_D`` (α, temperature of its MLM-KD term) plus ``layerwise_in_pretraining`` x the layer terms."""

    attention: float = 1.0  # L_MHA
    feature: float = 1.0  # L_FM
    alpha: float = 0.5  # α in L_D; effectively 1 without teacher MLM logits
    temperature: float = 1.0
    layerwise_in_pretraining: float = 0.0  # the paper trains L_D alone after the progressive stages


MODES = ("disabled", "memory", "disk")


@dataclass
class TeacherCacheConfig:
    """``recipe.teacher_cache``: mode (disabled | memory | disk), directory (disk), size bound in GB, storage dtype."""

    mode: str = "disabled"  # disabled | memory | disk
    dir: str = "~/.cache/distill-recipes/teacher"
    max_gb: float = 4.0
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"recipe.teacher_cache.mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(
                f"recipe.teacher_cache.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}"
            )
        if self.max_gb <= 0:
            raise ValueError(f"recipe.teacher_cache.max_gb must be > 0, got {self.max_gb}")


POOLS = ("mean", "cls")


@dataclass
class ProbeConfig:
    """``recipe.probe``: a linear probe on the ``task`` group's data after distillation, on when
    ``max_train_examples`` > 0 (``python run.py recipe=flash_distill recipe.probe.max_train_examples=2000``).

    Off is 0 rather than a null ``recipe.probe``: Hydra cannot set a field inside a null node from the command line
    (``recipe.probe.pool=cls`` on a null ``recipe.probe`` fails), so the node always exists. A cap above the split's
    size takes every row.
    ``pool: mean`` (default) averages the last block's states over the real tokens: MLM and the layer-wise losses
    train every position, while the [CLS] state (``cls``) is trained only through the NSP head, which a short
    flash run barely moves; the offline MiniLM teacher is itself a mean-pooled sentence encoder.
    ``seed`` picks the train subset, the same for every student, so a ranking compares students, not subsets.
    """

    max_train_examples: int = 0  # rows of a seeded subset of the train split; 0: no probe
    pool: str = "mean"  # mean | cls
    l2: float = 1.0  # L2 strength on standardised features (scikit-learn's C = 1 / l2)
    max_iter: int = 1000  # L-BFGS iterations (converges in tens to a few hundred here)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_train_examples < 0 or self.max_train_examples == 1:
            raise ValueError(
                f"recipe.probe.max_train_examples must be 0 (no probe) or >= 2, got {self.max_train_examples}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"recipe.probe.pool must be one of {POOLS}, got {self.pool!r}")
        if self.l2 <= 0:
            raise ValueError(f"recipe.probe.l2 must be > 0, got {self.l2}")
        if self.max_iter < 1:
            raise ValueError(f"recipe.probe.max_iter must be >= 1, got {self.max_iter}")

    @property
    def enabled(self) -> bool:
        return self.max_train_examples > 0


TRUNCATION_SCHEMES = ("every_other", "first", "last", "uniform")


@dataclass
class TruncationInit:
    """``recipe.init``: start the student as the teacher with fewer layers, copied from it (modules/truncation.py).

    Off (``num_layers: 0`` and no ``layers``) the student is the ``student`` group's architecture. On, the student
    is the teacher's shape with ``num_layers`` blocks, block k copied from teacher layer ``layers[k]`` or, when
    ``layers`` is null, from the layer ``scheme`` picks: DistilBERT ``every_other`` (6 of 12), PKD ``first`` (k).
    """

    num_layers: int = 0  # 0: no truncation init
    scheme: str = "every_other"  # every_other | first | last | uniform
    layers: list[int] | None = None  # explicit 0-based teacher layers; overrides scheme and num_layers

    def __post_init__(self) -> None:
        if self.scheme not in TRUNCATION_SCHEMES:
            raise ValueError(f"recipe.init.scheme must be one of {TRUNCATION_SCHEMES}, got {self.scheme!r}")
        if self.num_layers < 0:
            raise ValueError(f"recipe.init.num_layers must be >= 0 (0: no truncation init), got {self.num_layers}")
        if self.layers is not None:
            if not self.layers or any(i < 0 for i in self.layers):
                raise ValueError(f"recipe.init.layers must list 0-based teacher layers, got {self.layers}")
            if self.num_layers not in (0, len(self.layers)):
                raise ValueError(
                    f"recipe.init.num_layers={self.num_layers} disagrees with recipe.init.layers {self.layers}; "
                    "set one of them"
                )

    @property
    def enabled(self) -> bool:
        return self.num_layers > 0 or self.layers is not None
