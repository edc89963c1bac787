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
    """Weights of the distillation losses: AutoDistill's mix by default, the survey's pre-training mixes by preset.

    AutoDistill (§3.3): per block stage ``attention·L_MHA + feature·L_FM``; in pre-training ``L_D = α·L_MLM +
    (1−α)·L_MLM-KD + nsp·L_NSP`` (α, temperature of its MLM-KD term) plus ``layerwise_in_pretraining`` x Σ_k the layer
    terms. The survey's methods (conf/experiment/, modules/distillation.py) set absolute weights instead of α and add:
    - DistilBERT (Sanh et al. 2019, §3): ``mlm_kd: 5, temperature: 2, mlm: 2, cosine: 1, nsp: 0``;
    - TinyBERT's general distillation (Jiao et al. 2020, Eq. 7–10): ``attention_scores: 1`` (Σ_m Eq. 7 on the
      unnormalised scores), ``layerwise_in_pretraining: 1, feature: 1, attention: 0`` (Σ_m Eq. 8: L_FM through the
      learned projection W_h), ``embedding: 1`` (Eq. 9 through W_e), ``mlm: 0, mlm_kd: 0, nsp: 0``;
    - PD (Turc et al. 2019, §3): ``mlm: 1, mlm_kd: 0, nsp: 0``: MLM alone, the teacher is never run.
    """

    attention: float = 1.0  # L_MHA
    feature: float = 1.0  # L_FM
    alpha: float = 0.5  # α in L_D; effectively 1 without teacher MLM logits
    temperature: float = 1.0
    layerwise_in_pretraining: float = 0.0  # the paper trains L_D alone after the progressive stages
    # Absolute weights of L_MLM and of the soft-target L_MLM-KD, both or neither; null: AutoDistill's α and 1 − α.
    mlm: float | None = None
    mlm_kd: float | None = None
    nsp: float = 1.0  # L_NSP (0: off and not computed)
    cosine: float = 0.0  # DistilBERT's L_cos of the last hidden states (the student's projected where widths differ)
    attention_scores: float = 0.0  # TinyBERT Eq. 7, summed over the mapped layers (layer_map)
    embedding: float = 0.0  # TinyBERT Eq. 9: MSE of the embedding outputs through a learned W_e

    def __post_init__(self) -> None:
        for name in ("nsp", "cosine", "attention_scores", "embedding", "mlm", "mlm_kd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"recipe.losses.{name} must be >= 0, got {value}")
        if (self.mlm is None) != (self.mlm_kd is None):
            raise ValueError(
                f"recipe.losses.mlm={self.mlm} and recipe.losses.mlm_kd={self.mlm_kd}: give both absolute weights "
                "(DistilBERT: mlm=2, mlm_kd=5) or neither (AutoDistill's alpha mix)"
            )
        if self.mlm == 0 and self.mlm_kd == 0 and self.nsp > 0:
            raise ValueError(
                f"recipe.losses.nsp={self.nsp} with mlm = mlm_kd = 0: the MLM head is not trained, and NSP alone is no "
                "pre-training mix; set recipe.losses.nsp=0 (TinyBERT's general distillation) or give mlm a weight"
            )
        if self.mlm is not None and self.alpha != LossWeights.alpha:
            raise ValueError(
                f"recipe.losses.alpha={self.alpha} has no effect when recipe.losses.mlm / mlm_kd are set (absolute "
                "weights); leave alpha at its default and set mlm / mlm_kd"
            )

    @property
    def absolute(self) -> bool:
        """Whether L_MLM and L_MLM-KD take the absolute weights ``mlm`` / ``mlm_kd`` instead of α and 1 − α."""
        return self.mlm is not None

    def wants_mlm_kd(self) -> bool:
        """Whether the mix has a soft-target MLM term (given teacher MLM logits)."""
        return self.mlm_kd > 0 if self.absolute else self.alpha < 1.0

    def wants_mlm(self) -> bool:
        """Whether the student's MLM head is trained at all (TinyBERT's general distillation does not)."""
        return (self.mlm > 0 or self.mlm_kd > 0) if self.absolute else True

    def describe(self, teacher_has_mlm: bool) -> str:
        """The pre-training stage's objective as a formula, e.g. ``5·L_MLM-KD(T=2) + 2·L_MLM + 1·L_cos``."""
        terms = []
        if self.absolute:
            mlm, kd = self.mlm, (self.mlm_kd if teacher_has_mlm else 0.0)
        else:
            mlm, kd = (self.alpha, 1 - self.alpha) if teacher_has_mlm else (1.0, 0.0)
        inner = [f"{w:g}·{n}" for w, n in ((self.attention, "L_MHA"), (self.feature, "L_FM")) if w > 0]
        layerwise = f"Σ_k({' + '.join(inner) or '0'})"
        for weight, name in ((kd, f"L_MLM-KD(T={self.temperature:g})"), (mlm, "L_MLM"), (self.nsp, "L_NSP"),
                             (self.layerwise_in_pretraining, layerwise), (self.cosine, "L_cos(last hidden)"),
                             (self.attention_scores, "Σ_k L_attn(scores)"), (self.embedding, "L_embd(W_e)")):  # fmt: skip
            if weight > 0:
                terms.append(f"{weight:g}·{name}")
        return " + ".join(terms) or "0"

    def pretraining_teacher_terms(self, teacher_has_mlm: bool) -> list[str]:
        """The pre-training stage's terms that read teacher outputs (empty: the stage never runs the teacher)."""
        terms = {
            "mlm_kd": teacher_has_mlm and self.wants_mlm_kd(),
            "layerwise_in_pretraining": self.layerwise_in_pretraining > 0,
            "cosine": self.cosine > 0,
            "attention_scores": self.attention_scores > 0,
            "embedding": self.embedding > 0,
        }
        return [name for name, on in terms.items() if on]


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
