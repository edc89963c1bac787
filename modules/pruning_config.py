"""Pruning's nested config schemas (issue 19), import-light (no torch: ``python run.py --help`` composes with them).

- ``CubicSchedule``: Zhu & Gupta's gradual schedule in fractions of a run's optimizer steps (recipe=prune's
  magnitude method, recipe=finetune's NIP);
- ``RPPConfig``: Guo et al.'s reweighted proximal pruning (recipe=prune ``method: rpp``);
- ``StructuredConfig``: head / FFN-neuron removal (recipe=prune ``method: structured``);
- ``FinetuneSparsity``: ``recipe.sparsity`` of recipe=finetune: keep a pruned model's zeros, or NIP.
What uses them: modules/pruning.py (the maths), callbacks/pruning.py (when), recipes/prune.py, recipes/finetune.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRUNE_METHODS = ("magnitude", "rpp", "structured")
KEEP = ("auto", "on", "off")


def _fraction(value: float, key: str, upper_open: bool = True) -> None:
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{key} must be in [0, {'1)' if upper_open else '1]'}, got {value}")


@dataclass
class CubicSchedule:
    """Zhu & Gupta (2017) eq. (1): sparsity rises from ``initial`` to the target between ``begin_fraction`` and
    ``end_fraction`` of the run's optimizer steps, a pruning event every ``frequency`` steps (Δt); then it holds, and
    the rest of the run recovers with the mask fixed. ``begin_fraction == end_fraction``: one-shot pruning."""

    begin_fraction: float = 0.0
    end_fraction: float = 0.5
    frequency: int = 10  # Δt, optimizer steps between pruning events (Zhu & Gupta: 100-1000 at ImageNet scale)
    initial: float = 0.0  # s_i

    def check(self, key: str) -> None:
        _fraction(self.begin_fraction, f"{key}.begin_fraction", upper_open=False)
        _fraction(self.end_fraction, f"{key}.end_fraction", upper_open=False)
        _fraction(self.initial, f"{key}.initial")
        if self.end_fraction < self.begin_fraction:
            raise ValueError(f"{key}.end_fraction={self.end_fraction} is before {key}.begin_fraction="
                             f"{self.begin_fraction}; set end_fraction >= begin_fraction")  # fmt: skip
        if self.frequency < 1:
            raise ValueError(f"{key}.frequency (Δt, steps between pruning events) must be >= 1, got {self.frequency}")

    def steps(self, total: int) -> tuple[int, int]:
        """(t0, t_end) in optimizer steps of a ``total``-step run."""
        return int(round(self.begin_fraction * total)), int(round(self.end_fraction * total))


@dataclass
class RPPConfig:
    """Guo et al. (2019): ``λ Σ α_w |w|`` with ``α_w = 1/(|w| + ε)`` re-estimated every ``reweight_every`` steps; a
    proximal step after every optimizer step. λ sets the prune ratio reached (the paper reports 59.3% and 88.4%)."""

    lam: float = 1.0  # λ
    eps: float = 1e-3  # ε of α_w: |w| below ~ε is pushed to zero at full strength
    reweight_every: int = 100  # steps between re-estimates of α ("every few hundred steps")

    def check(self, key: str) -> None:
        if self.lam < 0 or self.eps <= 0 or self.reweight_every < 1:
            raise ValueError(f"{key}: lam >= 0, eps > 0 and reweight_every >= 1 required, got lam={self.lam}, "
                             f"eps={self.eps}, reweight_every={self.reweight_every}")  # fmt: skip


@dataclass
class StructuredConfig:
    """Fractions of attention heads and of FFN neurons removed from every layer (at least one of each stays),
    ranked by magnitude (modules/pruning.py: ``head_scores``, ``neuron_scores``)."""

    heads: float = 0.5
    ffn: float = 0.5

    def check(self, key: str) -> None:
        _fraction(self.heads, f"{key}.heads")
        _fraction(self.ffn, f"{key}.ffn")


@dataclass
class FinetuneSparsity:
    """``recipe.sparsity`` of recipe=finetune.

    ``keep``: hold the loaded model's zero weights at zero after every optimizer step (a pruned model's mask stays
    fixed); ``auto`` does so when the model's config.json records a pruning (``pruning`` key, written by
    recipe=prune). ``nip``: a target sparsity > 0 turns on NIP (the RPP paper's baseline): iterative magnitude
    pruning during fine-tuning, on ``nip_schedule``.
    """

    keep: str = "auto"  # auto | on | off
    nip: float = 0.0  # target sparsity of iterative magnitude pruning during fine-tuning; 0: off
    nip_schedule: CubicSchedule = field(default_factory=CubicSchedule)

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"recipe.sparsity.keep must be one of {KEEP}, got {self.keep!r}")
        _fraction(self.nip, "recipe.sparsity.nip")
        self.nip_schedule.check("recipe.sparsity.nip_schedule")
        if self.nip > 0 and self.keep == "off":
            raise ValueError("recipe.sparsity.nip > 0 prunes during fine-tuning, which keeps its own mask: "
                             "leave recipe.sparsity.keep at auto or on")  # fmt: skip
