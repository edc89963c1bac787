"""GLUE's facts, once: per task its text columns, label count, validation splits, official metrics and
submission files (Wang et al. 2019, "GLUE: A Multi-Task Benchmark"; the leaderboard's file formats).

Import-light on purpose (no torch): the report scripts read the task order and metric names from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Attributes:
        text_columns: the dataset's text fields (one, or a pair).
        num_labels: classes; 1 = regression (STS-B).
        validation_splits: the first one is monitored (MNLI has matched and mismatched sets).
        metrics: the official metric(s) in the papers' print order; the task score is their mean x 100.
        submission_files: test split -> file stem of the leaderboard's submission file.
        labels_as_names: the submission file holds label names (MNLI, QNLI, RTE) instead of 0/1.
    """

    text_columns: tuple[str, ...]
    num_labels: int
    validation_splits: tuple[str, ...]
    metrics: tuple[str, ...]
    submission_files: dict[str, str]
    labels_as_names: bool = False


_PAIR = ("sentence1", "sentence2")
_VAL = ("validation",)

# In the BERT paper's table order.
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence",), 2, _VAL, ("mcc",), {"test": "CoLA"}),
    "sst2": GlueTask(("sentence",), 2, _VAL, ("acc",), {"test": "SST-2"}),
    "mrpc": GlueTask(_PAIR, 2, _VAL, ("f1", "acc"), {"test": "MRPC"}),
    "stsb": GlueTask(_PAIR, 1, _VAL, ("pearson", "spearman"), {"test": "STS-B"}),
    "qqp": GlueTask(("question1", "question2"), 2, _VAL, ("f1", "acc"), {"test": "QQP"}),
    "mnli": GlueTask(
        ("premise", "hypothesis"), 3, ("validation_matched", "validation_mismatched"), ("acc",),
        {"test": "MNLI-m", "test_mismatched": "MNLI-mm"}, labels_as_names=True,
    ),
    "qnli": GlueTask(("question", "sentence"), 2, _VAL, ("acc",), {"test": "QNLI"}, labels_as_names=True),
    "rte": GlueTask(_PAIR, 2, _VAL, ("acc",), {"test": "RTE"}, labels_as_names=True),
    "wnli": GlueTask(_PAIR, 2, _VAL, ("acc",), {"test": "WNLI"}),
}
