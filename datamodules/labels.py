"""Labels of classification / regression rows: parse the values as read, name the classes from the training
split, and encode every split as ids (classification) or floats (regression).

Each problem is a ``DataError`` naming the source, the line and the value.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import torch

from core.assets import DataError
from datamodules.task_files import RawExample

# The placeholder label of every row of a split loaded without gold labels (GLUE's hidden test labels, a
# local test file without the label column). Whether a split is labelled is decided by how it was loaded
# (``unlabelled_split``), never by comparing a label to this value: -1 is a real regression score.
UNLABELLED = -1


def _as_int(value: Any) -> int | None:
    """The value as an int label when it is one (42, "42", " -1"), else None. Bools are not labels."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _as_float(value: Any, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: label {value!r} is not a number ({what})") from err
    if not math.isfinite(number):
        raise DataError(f"{where}: label {value!r} is not a finite number ({what})")
    return number


def parse_labels(
    examples: list[RawExample], num_labels: int, binarize_at: float | None, path: Path | str
) -> tuple[list[RawExample], int]:
    """Parse raw label values; with ``binarize_at`` threshold them and drop rows exactly at it.

    Args:
        examples: rows as read.
        num_labels: 1 = regression (float labels); otherwise classification.
        binarize_at: when set, label = int(float(value) > binarize_at).
        path: the source, for error messages.

    Returns:
        (examples with labels parsed: float for regression, int for binarised and int-valued labels,
        str for other class names, kept rows only; number of rows dropped at the threshold).

    Raises:
        DataError: a label that is empty or not a number where a number is needed (names line and value).
    """
    parsed = []
    dropped = 0
    for ex in examples:
        where = f"{path} line {ex.line}"
        value = ex.label
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: empty label")
        if binarize_at is not None:
            number = _as_float(value, where, f"task.binarize_at={binarize_at} needs numeric labels")
            if number == binarize_at:  # neither class: the task defines these rows as neutral
                dropped += 1
                continue
            label: Any = int(number > binarize_at)
        elif num_labels == 1:
            label = _as_float(value, where, "task.num_labels=1 is regression and needs numeric labels")
        else:
            as_int = _as_int(value)
            label = as_int if as_int is not None else str(value).strip()
        parsed.append(dataclasses.replace(ex, label=label))
    return parsed, dropped


def label_names_for(train_labels: list[Any], num_labels: int, path: Path | str) -> list[str]:
    """Class names, index = label id, decided by the training split.

    Int labels name themselves ("0", "1", ...). Any other values are mapped to ids by their sorted
    unique values in the training split, so the mapping does not depend on row order.

    Args:
        train_labels: parsed training labels (int or str).
        num_labels: number of classes.
        path: the source, for error messages.

    Returns:
        ``num_labels`` names for int labels, else the sorted unique training values.

    Raises:
        DataError: more distinct values than ``num_labels``.
    """
    if all(isinstance(label, int) for label in train_labels):
        return [str(i) for i in range(num_labels)]
    names = sorted({str(label) for label in train_labels})
    if len(names) > num_labels:
        raise DataError(
            f"{path}: the training split has {len(names)} distinct labels {names[:20]} but "
            f"task.num_labels={num_labels}; fix task.num_labels or the label column"
        )
    return names


def unlabelled_split(n: int, num_labels: int) -> torch.Tensor:
    """The labels of a split that has no gold labels: (N,) ``UNLABELLED`` placeholders, float32 for
    regression, else int64. Never scored: the data module records the split as unlabelled."""
    return torch.full((n,), UNLABELLED, dtype=torch.float32 if num_labels == 1 else torch.long)


def encode_labels(
    examples: list[RawExample],
    num_labels: int,
    label_names: list[str],
    path: Path | str,
) -> torch.Tensor:
    """Label ids (classification) or values (regression) of one labelled split.

    Args:
        examples: parsed rows of the split.
        num_labels: 1 = regression.
        label_names: from ``label_names_for``; names that are ints map to themselves.
        path: the source, for error messages.

    Returns:
        (N,) float32 for regression (any finite value, -1.0 included), else (N,) int64 in [0, num_labels).

    Raises:
        DataError: a label out of range or not among the training labels (names line and value).
    """
    if num_labels == 1:
        return torch.tensor([float(ex.label) for ex in examples], dtype=torch.float32)
    by_name = {name: i for i, name in enumerate(label_names)}
    names_are_ids = label_names == [str(i) for i in range(num_labels)]
    ids = []
    for ex in examples:
        label = ex.label
        if isinstance(label, int) and names_are_ids:
            if not 0 <= label < num_labels:
                raise DataError(
                    f"{path} line {ex.line}: label {label} is out of range [0, {num_labels}) "
                    f"(task.num_labels={num_labels})"
                )
            ids.append(label)
        elif str(label) in by_name:
            ids.append(by_name[str(label)])
        else:
            raise DataError(
                f"{path} line {ex.line}: label {label!r} is not one of the training labels {label_names}"
            )
    return torch.tensor(ids, dtype=torch.long)
