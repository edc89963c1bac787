"""The intermediate-layer terms of task-specific distillation in recipe=finetune (``recipe.task_kd.intermediate``,
schema ``modules.intermediate_config``): which student layer learns from which teacher layer, both models' layer
outputs (and raw attention scores), the learned projections where widths differ, and the terms:

- PKD (Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression", Eq. 5):
  ``L_PT = Σ_j ‖ h_s,j/‖h_s,j‖ − h_t,I(j)/‖h_t,I(j)‖ ‖²`` over the [CLS] states of the student's first k − 1 layers
  (the k-th is taught by the logits term), I = PKD-Skip or PKD-Last;
- TinyBERT's task stage (Jiao et al. 2020, §3.1 Eq. 7-9, §3.3): ``Σ_m L_attn + L_hidn`` over every student layer m
  and its teacher layer g(m) (attention scores before the softmax; hidden states through a learned W_h), plus
  ``L_embd`` on the embeddings (through W_e).

Layer outputs are HF-indexed: ``states[0]`` is the embedding output, ``states[i]`` layer i's output (1-based), for
stock HF models (``hidden_states``) and the project's student (``encoder.embeddings`` + ``encoder.block_outputs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modules.attention_scores import AttentionScores
from modules.intermediate_config import IntermediateKDConfig
from modules.losses import attention_score_loss, feature_map_loss, pkd_loss

KEY = "recipe.task_kd.intermediate"


def task_layer_pairs(cfg: IntermediateKDConfig, num_student: int, num_teacher: int) -> list[tuple[int, int]]:
    """The (student layer, teacher layer) pairs the intermediate terms compare, both 1-based (HF's hidden-state
    indices). PKD pairs the student's layers 1..k−1, TinyBERT all k.

    - skip (PKD-Skip): student j <- teacher j·L/k (12 -> 6: {2, 4, 6, 8, 10}); needs L divisible by k;
    - last (PKD-Last): student j <- teacher L − k + j (12 -> 6: {7, 8, 9, 10, 11});
    - uniform (TinyBERT's g(m) = m·L/k): student j <- teacher ⌈j·L/k⌉;
    - explicit: ``cfg.layers`` (0-based teacher layers, one per distilled student layer).

    Raises:
        ValueError: naming the field and the fix: a map this depth pair cannot take, a wrong-length or out-of-range
            explicit list, a one-layer PKD student (nothing to pair).
    """
    distilled = num_student - 1 if cfg.kind == "pkd" else num_student
    if distilled < 1:
        raise ValueError(f"{KEY}.kind=pkd: the student has {num_student} layer; PKD pairs layers 1..k-1, so k >= 2")
    students = list(range(1, distilled + 1))
    if cfg.resolved_map == "explicit":
        layers = list(cfg.layers or [])
        if len(layers) != distilled or max(layers) >= num_teacher:
            raise ValueError(
                f"{KEY}.layers={layers}: give {distilled} 0-based teacher layers (of 0..{num_teacher - 1}), one per "
                f"distilled student layer ({cfg.kind}: student layers 1..{distilled})"
            )
        return list(zip(students, [layer + 1 for layer in layers]))
    if num_student > num_teacher:
        raise ValueError(f"{KEY}.layer_map={cfg.resolved_map}: the student ({num_student} layers) is deeper than the "
                         f"teacher ({num_teacher}); use layer_map=explicit")  # fmt: skip
    if cfg.resolved_map == "skip":
        if num_teacher % num_student:
            raise ValueError(
                f"{KEY}.layer_map=skip: PKD-Skip takes every (L/k)-th teacher layer, and L={num_teacher} is not a "
                f"multiple of k={num_student}; use layer_map=uniform (rounds j·L/k up) or explicit"
            )
        return [(j, j * num_teacher // num_student) for j in students]
    if cfg.resolved_map == "last":
        return [(j, num_teacher - num_student + j) for j in students]
    return [(j, -(-j * num_teacher // num_student)) for j in students]  # uniform


def encoder_states(output) -> tuple[torch.Tensor, ...]:
    """Embedding output then every layer's output, each (B, S, H_i), from a model called with
    ``output_hidden_states=True``: HF's ``hidden_states`` (L + 1, embeddings first), or the project student's
    ``encoder.embeddings`` + ``encoder.block_outputs``."""
    hidden = getattr(output, "hidden_states", None)
    if hidden is not None:
        return tuple(hidden)
    return (output.encoder.embeddings, *output.encoder.block_outputs)


@dataclass
class Encoded:
    """One model's view of a batch: logits (B, C), states (L + 1 of (B, S, H_i), embeddings first), and the raw
    attention scores q·kᵀ/√d of every layer, (B, heads, S, S) each, when asked (None otherwise)."""

    logits: torch.Tensor
    states: tuple[torch.Tensor, ...]
    scores: tuple[torch.Tensor, ...] | None


def encode(model: nn.Module, batch: dict[str, torch.Tensor], scores: bool) -> Encoded:
    """``model`` on ``batch`` (input_ids, attention_mask, token_type_ids: (B, S)) with its layer outputs, and with
    ``scores`` its pre-softmax attention scores (``modules.attention_scores.AttentionScores``)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "token_type_ids": batch.get("token_type_ids"), "output_hidden_states": True}  # fmt: skip
    if not scores:
        out = model(**inputs)
        return Encoded(out.logits, encoder_states(out), None)
    with AttentionScores(model) as capture:
        out = model(**inputs)
    return Encoded(out.logits, encoder_states(out), tuple(capture.scores()))


@torch.no_grad()
def state_widths(model: nn.Module) -> list[int]:
    """The width of each of ``model``'s states (embeddings, then every layer), read from one 1 × 4 forward in eval
    mode (any architecture; the mode and the global RNG are left as they were)."""
    mode = model.training
    device = next(model.parameters()).device
    ids = torch.ones(1, 4, dtype=torch.long, device=device)
    with torch.random.fork_rng(devices=[]):
        states = encode(model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, scores=False).states
    model.train(mode)
    return [s.shape[-1] for s in states]


class IntermediateDistiller(nn.Module):
    """The intermediate terms of one run, with their learned projections (student width -> teacher width, only where
    the two differ: PKD's [CLS] states, TinyBERT's W_h per distilled layer and W_e).

    A submodule of ``FinetuneModule``: the projections train with the student, are in its checkpoints and optimizer,
    and are never saved into the student (the recipe saves ``module.model``). TinyBERT's code shares one W_h across
    layers; here each layer has its own, since the project's students may change width from block to block.

    Args:
        cfg: the kind, β and ``only``; pairs: ``task_layer_pairs``; student_widths, teacher_widths: ``state_widths``.
    """

    def __init__(self, cfg: IntermediateKDConfig, pairs: list[tuple[int, int]], student_widths: list[int],
                 teacher_widths: list[int]) -> None:  # fmt: skip
        super().__init__()
        self.kind, self.beta, self.only, self.pairs = cfg.kind, cfg.beta, cfg.only, list(pairs)
        projected = self.pairs + ([(0, 0)] if self.kind == "tinybert" else [])  # W_e on the embeddings
        self.projections = nn.ModuleDict({
            str(s): nn.Linear(student_widths[s], teacher_widths[t])
            for s, t in projected if student_widths[s] != teacher_widths[t]
        })  # fmt: skip

    @property
    def needs_scores(self) -> bool:
        return self.kind == "tinybert"

    def project(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Student state ``layer`` (…, H_s) in the teacher's width (…, H_t)."""
        return self.projections[str(layer)](x) if str(layer) in self.projections else x

    def forward(self, *, student: Encoded, teacher: Encoded, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted terms (the module mixes them with β): PKD ``{"pt"}``; TinyBERT ``{"attn", "hidn", "embd"}``,
        each summed over the paired layers (TinyBERT Eq. 6 with every λ = 1).

        Args:
            student, teacher: ``encode`` of the same batch; attention_mask: (B, S) 1 for real tokens.
        """
        if self.kind == "pkd":
            s_cls = torch.stack([self.project(s, student.states[s][:, 0]) for s, _ in self.pairs], dim=1)  # (B, J, D)
            t_cls = torch.stack([teacher.states[t][:, 0] for _, t in self.pairs], dim=1)  # (B, J, D)
            return {"pt": pkd_loss(student_cls=s_cls, teacher_cls=t_cls)}
        mask = attention_mask
        attn = sum(attention_score_loss(student_scores=student.scores[s - 1], teacher_scores=teacher.scores[t - 1],
                                        attention_mask=mask) for s, t in self.pairs)  # fmt: skip
        hidn = sum(feature_map_loss(student_hidden=self.project(s, student.states[s]), teacher_hidden=teacher.states[t],
                                    attention_mask=mask) for s, t in self.pairs)  # fmt: skip
        embd = feature_map_loss(student_hidden=self.project(0, student.states[0]), teacher_hidden=teacher.states[0],
                                attention_mask=mask)  # fmt: skip
        return {"attn": attn, "hidn": hidn, "embd": embd}
