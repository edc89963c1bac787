"""``recipe.task_kd.intermediate``: the intermediate-layer terms of task-specific distillation in recipe=finetune,
import-light (no torch: ``python run.py --help`` composes the config with it). What uses it:
modules/task_intermediate.py (the terms and their projections), modules/finetuning.py (the loss mix).

- ``pkd``: Patient KD (Sun et al. 2019, Eq. 5-6): ``L = (1 − α)·L_CE + α·L_DS + β·L_PT``, α = ``recipe.task_kd.gamma``,
  L_DS = ``recipe.task_kd.temperature``'s soft KD, ``L_PT`` over the normalised [CLS] states of the student's first k − 1
  layers (the last one learns through L_DS) against the mapped teacher layers;
- ``tinybert``: TinyBERT's task-specific intermediate-layer distillation (Jiao et al. 2020, §3.1 Eq. 7-9, §3.3):
  attention-score MSE + hidden-state MSE (through a learned W_h) over every student layer + embedding MSE (W_e);
  with ``only: true`` these terms alone (TinyBERT's stage 1; stage 2, prediction-layer KD, is a second run:
  ``recipe.task_kd.gamma=1 recipe.task_kd.temperature=1`` on stage 1's saved model).
"""

from __future__ import annotations

from dataclasses import dataclass

INTERMEDIATE_KINDS = ("none", "pkd", "tinybert")
# skip: PKD-Skip, every (L/k)-th teacher layer (needs L divisible by k); last: PKD-Last, the last layers;
# uniform: TinyBERT's g(m) = m·L/k rounded up (= skip where L is divisible by k); explicit: ``layers``.
TASK_LAYER_MAPS = ("skip", "last", "uniform", "explicit")
DEFAULT_LAYER_MAP = {"none": "uniform", "pkd": "skip", "tinybert": "uniform"}


@dataclass
class IntermediateKDConfig:
    """Which intermediate terms task KD adds, their weight and the student -> teacher layer map.

    ``layers`` (``layer_map: explicit``) are 0-based teacher layers, one per distilled student layer: PKD distils the
    student's first k − 1 layers (the paper's PKD-Skip for 6 of 12 layers, teacher layers {2, 4, 6, 8, 10}, is
    ``[1, 3, 5, 7, 9]``), TinyBERT all k.
    """

    kind: str = "none"  # none | pkd | tinybert
    # Weight of the intermediate term: PKD's β (paper grid {10, 100, 500, 1000}); TinyBERT sums its terms with 1.
    beta: float = 1.0
    layer_map: str | None = None  # skip | last | uniform | explicit; null: the kind's (pkd: skip, tinybert: uniform)
    layers: list[int] | None = None  # explicit only: 0-based teacher layer per distilled student layer
    # TinyBERT's stage 1: the intermediate terms alone (no CE, no logits KD), and the run keeps its last validated
    # model rather than the best-dev one (the head is not trained yet; TinyBERT's code saves every evaluation).
    only: bool = False

    def __post_init__(self) -> None:
        key = "recipe.task_kd.intermediate"
        if self.kind not in INTERMEDIATE_KINDS:
            raise ValueError(f"{key}.kind: must be one of {INTERMEDIATE_KINDS}, got {self.kind!r}")
        # layer_map stays null in the config (resolved by ``resolved_map``): the schema is instantiated when it is
        # registered, and a null filled in then would be the kind=none default for every later kind.
        if self.layer_map is not None and self.layer_map not in TASK_LAYER_MAPS:
            raise ValueError(f"{key}.layer_map: must be one of {TASK_LAYER_MAPS} or null, got {self.layer_map!r}")
        if (self.resolved_map == "explicit") != (self.layers is not None):
            raise ValueError(
                f"{key}.layers: give it exactly when {key}.layer_map=explicit (0-based teacher layers, one per "
                f"distilled student layer); got layer_map={self.layer_map!r}, layers={self.layers}"
            )
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError(f"{key}.layers: non-empty 0-based teacher layer indices, got {self.layers}")
        if self.beta < 0:
            raise ValueError(f"{key}.beta: the intermediate term's weight must be >= 0, got {self.beta}")
        if self.only and self.kind == "none":
            raise ValueError(
                f"{key}.only=true trains on the intermediate terms alone, but {key}.kind=none has none; "
                f"set {key}.kind=tinybert (TinyBERT's stage 1) or only=false"
            )

    @property
    def resolved_map(self) -> str:
        """``layer_map``, or the kind's default when it is null (pkd: skip, tinybert: uniform)."""
        return self.layer_map or DEFAULT_LAYER_MAP[self.kind]

    @property
    def enabled(self) -> bool:
        return self.kind != "none"
