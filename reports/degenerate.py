"""Which classifiers are degenerate (one predicted class, or at chance), from the metrics they already log.

One rule for every table and plot that shows a task score (reports/autodistill.py, finetune_table.py,
adabert_table.py), so a model that learned nothing is never printed as a normal number.

What the metrics allow (modules/finetuning.py: a binary local task logs acc and F1 of the positive class,
GLUE tasks their official metrics, a regression task Pearson/Spearman): with N rows, accuracy
``a = (TP + TN) / N`` and ``F1 = 2TP / (2TP + FP + FN)`` give the two kinds of correct answer as shares of the
rows, ``TP/N = F1 (1 − a) / (2 (1 − F1))`` and ``TN/N = a − TP/N``. A binary classifier that almost never gets
one of the two classes right (e.g. one that predicts "positive" for 1,043 of 1,057 reviews) is flagged.
The rows' class balance is not in metrics.json, so "accuracy at the majority-class rate" cannot be checked;
MCC and correlations are their own chance level (0).
"""

from __future__ import annotations

import math

# A binary classifier whose correct answers of one class are under this share of the rows is "one class".
# A genuinely good classifier trips it only on a task whose minority class is under 2% of the rows.
ONE_CLASS_SHARE = 0.02
# |MCC| or |correlation| under this is chance level (a constant prediction gives exactly 0, or NaN on test).
CHANCE_CORRELATION = 0.02

FOOTNOTE = (
    "⚠ degenerate: *one class*: a binary classifier that (almost) never predicts one class correctly (under "
    f"{ONE_CLASS_SHARE:.0%} of the rows are correct answers of that class, from accuracy and F1); *at chance*: "
    f"MCC or correlation within ±{CHANCE_CORRELATION} of 0, or undefined (a constant prediction). Its score is "
    "not a measure of the model (reports/degenerate.py)."
)


def correct_shares(acc: float, f1: float) -> tuple[float, float]:
    """(TP/N, TN/N) of a binary classifier from its accuracy and positive-class F1 (both in [0, 1])."""
    if f1 >= 1.0:
        return acc, 0.0  # F1 = 1: no errors on the positives; every other correct answer is a negative
    tp = f1 * (1.0 - acc) / (2.0 * (1.0 - f1))
    return tp, acc - tp


def degenerate(metrics: dict[str, float], prefix: str = "val/") -> str | None:
    """Why the classifier behind ``metrics`` is degenerate ("one class", "at chance"), or None.

    Args:
        metrics: a metrics.json dict (``<prefix>acc``, ``<prefix>f1``, ``<prefix>mcc``, ``<prefix>pearson``, ...).
        prefix: the split the shown score comes from: ``"val/"``, ``"test/"``, ``"teacher/val/"``.
    Returns:
        "one class": binary acc and F1 say one class is (almost) never predicted correctly (F1 = 0: no true
        positive; F1 = 2a/(1 + a): no true negative, e.g. "positive" for every row);
        "at chance": MCC, Pearson or Spearman within ±CHANCE_CORRELATION of 0, or NaN;
        None: not degenerate, or the metrics say nothing (accuracy alone, multi-class, QA).
    """
    acc, f1 = metrics.get(f"{prefix}acc"), metrics.get(f"{prefix}f1")
    if acc is not None and f1 is not None and math.isfinite(acc) and math.isfinite(f1) and acc > 0:
        # A share below 0 beyond float32 rounding: acc and F1 are not from one confusion matrix (averaged
        # or hand-written numbers), so they say nothing about the predicted classes.
        if -1e-3 < min(correct_shares(acc, f1)) < ONE_CLASS_SHARE:
            return "one class"
    for name in ("mcc", "pearson", "spearman"):
        value = metrics.get(f"{prefix}{name}")
        if value is not None and (not math.isfinite(value) or abs(value) < CHANCE_CORRELATION):
            return "at chance"
    return None


def score_prefix(metrics: dict[str, float]) -> str:
    """The split a report's score comes from: ``test/`` where the test split was scored, else ``val/``."""
    return "test/" if "test/score" in metrics else "val/"


def flagged(text: str, reason: str | None) -> str:
    """A table cell with its mark: ``⚠ one class: 57.26``, or the text unchanged.

    The mark goes first so the number still ends the cell, where readers (and tests) look for it.
    """
    return text if reason is None else f"⚠ {reason}: {text}"
