"""Extractive QA fine-tuning (SQuAD v1.1): span decoding, post-processing to answer text, and the
LightningModule, with optional task KD on the start / end distributions: ``(1 - γ)·CE + γ·KD``.

Post-processing follows Hugging Face's ``postprocess_qa_predictions`` (BERT's ``run_squad`` without its
max-context rule): in each window the best span is the (start, end) pair of
context tokens with ``start <= end < start + max_answer_len`` that maximises ``start_logit + end_logit``;
a question's answer is the best span over its windows, cut from the context by the offset mapping.
Here the search is exact over all such pairs (BERT searches the top-20 starts × top-20 ends).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.text import squad as squad_metric

from core.files import write_json_atomic
from datamodules.squad_features import NOT_CONTEXT
from datamodules.squad_files import QAExample
from modules.finetuning import (
    frozen_teacher,
    is_new_best,
    load_best_state,
    log_training_loss,
    save_best_state,
    seed_step,
    teacher_for_step,
    warmup_decay_optimizer,
)
from modules.losses import NO_KD, KDSettings, span_kd_loss


@dataclass
class WindowSpans:
    """The best span of each window: score (W,), start_char / end_char (W,) into its context (end exclusive;
    -1 where the window has no valid span), example_index (W,)."""

    score: torch.Tensor
    start_char: torch.Tensor
    end_char: torch.Tensor
    example_index: torch.Tensor


def best_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    offsets: torch.Tensor,
    example_index: torch.Tensor,
    max_answer_len: int,
) -> WindowSpans:
    """The highest-scoring valid span of each window.

    Args:
        start_logits, end_logits: (W, S).
        offsets: (W, S, 2) character span of each context token, NOT_CONTEXT for other tokens.
        example_index: (W,) the question each window belongs to.
        max_answer_len: the longest span, in tokens.
    """
    context = offsets[..., 0] != NOT_CONTEXT  # (W, S)
    start = start_logits.float().masked_fill(~context, -math.inf)
    end = end_logits.float().masked_fill(~context, -math.inf)
    w, s = start.shape
    best = torch.full((w,), -math.inf, device=start.device)
    best_start = torch.zeros(w, dtype=torch.long, device=start.device)
    best_end = torch.zeros(w, dtype=torch.long, device=start.device)
    # One diagonal band per span length: scores[:, i] = start[i] + end[i + length].
    for length in range(min(max_answer_len, s)):
        scores = start[:, : s - length] + end[:, length:]  # (W, S - length)
        value, i = scores.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        best_start = torch.where(better, i, best_start)
        best_end = torch.where(better, i + length, best_end)
    rows = torch.arange(w, device=start.device)
    found = torch.isfinite(best)
    start_char = torch.where(found, offsets[rows, best_start, 0], torch.full_like(best_start, -1))
    end_char = torch.where(found, offsets[rows, best_end, 1], torch.full_like(best_end, -1))
    return WindowSpans(best, start_char, end_char, example_index)


def answers_from_spans(spans: WindowSpans, examples: list[QAExample]) -> dict[str, str]:
    """Question id -> answer text: the best-scoring window's span of each question ("" if none had one)."""
    best: dict[int, tuple[float, int, int]] = {}
    for score, start, end, ex in zip(
        spans.score.tolist(), spans.start_char.tolist(), spans.end_char.tolist(), spans.example_index.tolist()
    ):
        if start >= 0 and score > best.get(ex, (-math.inf,))[0]:
            best[ex] = (score, start, end)
    answers = {}
    for i, example in enumerate(examples):
        _, start, end = best.get(i, (0.0, 0, 0))
        answers[example.id] = example.context[start:end]
    return answers


def squad_scores(predictions: dict[str, str], examples: list[QAExample]) -> dict[str, float]:
    """Exact match and F1 in percent, SQuAD's official normalisation (torchmetrics' port of the script):
    the best over each question's gold answers, averaged over questions."""
    preds = [{"id": ex.id, "prediction_text": predictions.get(ex.id, "")} for ex in examples]
    target = [
        {"id": ex.id, "answers": {"text": ex.answers, "answer_start": ex.answer_starts}} for ex in examples
    ]
    result = squad_metric(preds, target)
    return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}


def span_ce_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """Mean of the start and end cross-entropies (BERT's SQuAD loss)."""
    return (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2


class QAModule(L.LightningModule):
    """Fine-tunes ``model`` (any ``AutoModelForQuestionAnswering``) on SQuAD-style data.

    Each validation answers every question of ``examples`` and logs ``val/exact_match``, ``val/f1`` and
    ``val/score`` (their mean); ``best`` keeps the metrics at the best ``val/score`` (best dev), and
    ``best_predictions`` the answers then (id -> text, the official evaluation script's input format).
    Works under DDP: each rank decodes its windows, the per-window best spans are all-gathered.
    """

    def __init__(
        self,
        model: nn.Module,
        examples: list[QAExample],
        optimizer: Callable,
        total_steps: int | None = None,
        max_answer_len: int = 30,
        warmup_fraction: float = 0.1,
        kd_teacher: nn.Module | None = None,
        kd: KDSettings = NO_KD,
        on_best: Callable[[dict[str, float]], None] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # from_pretrained returns a model in eval mode and Lightning keeps each submodule's mode through
        # fit: without this, fine-tuning would run with dropout off.
        self.model = model.train()
        self.seed = seed
        self.examples = examples
        self.optimizer_factory = optimizer
        self.total_steps = total_steps
        self.max_answer_len = max_answer_len
        self.warmup_fraction = warmup_fraction
        self._teacher = frozen_teacher(kd_teacher)
        self.kd = kd
        self.on_best = on_best
        self.best: dict[str, float] = {}
        self.best_predictions: dict[str, str] = {}
        self.validated_at = -1
        self._windows: list[WindowSpans] = []

    def forward(
        self, batch: dict[str, torch.Tensor], model: nn.Module | None = None
    ) -> tuple[torch.Tensor, ...]:
        out = (model or self.model)(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        )
        return out.start_logits, out.end_logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seed_step(self, batch_idx)
        start_logits, end_logits = self(batch)
        ce = span_ce_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"])
        kd = None
        teacher = teacher_for_step(self, start_logits.device)
        if teacher is not None:
            with torch.no_grad():
                t_start, t_end = self(batch, model=teacher)
            kd = span_kd_loss(
                student_start_logits=start_logits, student_end_logits=end_logits,
                teacher_start_logits=t_start, teacher_end_logits=t_end,
                attention_mask=batch["attention_mask"], temperature=self.kd.temperature,
            )  # fmt: skip
        return log_training_loss(self, ce, kd)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        start_logits, end_logits = self(batch)
        self._windows.append(
            best_spans(
                start_logits, end_logits, batch["offsets"], batch["example_index"], self.max_answer_len
            )
        )

    def _gathered_windows(self) -> WindowSpans:
        fields = {
            name: torch.cat([getattr(w, name) for w in self._windows])
            for name in ("score", "start_char", "end_char", "example_index")
        }
        self._windows = []
        if self.trainer.world_size > 1:  # ranks hold different windows of the same question
            fields = {name: self.all_gather(t).reshape(-1) for name, t in fields.items()}
        return WindowSpans(**{name: t.cpu() for name, t in fields.items()})

    def on_validation_epoch_end(self) -> None:
        if not self._windows:
            return
        predictions = answers_from_spans(self._gathered_windows(), self.examples)
        values = squad_scores(predictions, self.examples)
        values["score"] = (values["exact_match"] + values["f1"]) / 2
        for k, v in values.items():
            self.log(f"val/{k}", v)  # every rank decoded the same gathered windows
        if self.trainer.sanity_checking:
            return
        self.validated_at = self.global_step
        current = {f"val/{k}": v for k, v in values.items()}
        if is_new_best(self.best, current, "val/score"):
            self.best = {**current, "best_step": float(self.global_step)}
            self.best_predictions = predictions
            if self.on_best is not None:
                self.on_best(self.best)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_best_state(self, checkpoint, "best_predictions")  # the best-dev answers survive a resume too

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_best_state(self, checkpoint)

    def configure_optimizers(self):
        return warmup_decay_optimizer(self, self.model.parameters())


def write_predictions(path: Path, predictions: dict[str, str]) -> None:
    """``{"<question id>": "<answer text>"}``: what SQuAD's official evaluate-v1.1.py reads."""
    write_json_atomic(path, predictions, indent=1, ensure_ascii=False)
