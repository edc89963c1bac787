"""Prediction files of a fine-tuned classifier: GLUE's submission format, or local rows keyed by their source."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from core.files import write_text_atomic
from datamodules.task_files import SourceRows


def write_predictions(
    path: Path,
    outputs: list[dict[str, torch.Tensor]],
    label_names: list[str],
    rows: SourceRows,
    glue: bool,
) -> None:
    """One line per predicted row, in source order, keyed by the row's identity in its source.

    GLUE (``glue=True``): the submission format ``index<TAB>prediction``, ``index`` = GLUE's ``idx``. Local
    files: ``index<TAB>line[<TAB>id]<TAB>prediction``: ``index`` = the row's 0-based position among its
    file's data rows (header and blank lines not counted), ``line`` = the 1-based line it starts on,
    ``id`` = its ``id`` / ``idx`` column when the file has one. The prediction is a label name (given
    ``label_names``), a label id, or a float for regression.

    Args:
        outputs: ``predict_step``'s batches: ``index`` (B,) = position in the split, ``prediction`` (B,).
        rows: the split's ``SourceRows`` (``ClassificationDataModule.source_rows[split]``).
    """
    position = torch.cat([o["index"] for o in outputs]).tolist()
    preds = torch.cat([o["prediction"] for o in outputs]).tolist()
    with_id = not glue and rows.id is not None
    text = io.StringIO(newline="")  # the csv module ends lines itself (\r\n)
    writer = csv.writer(text, delimiter="\t")
    header = ["index", "prediction"] if glue else ["index", "line", *(["id"] if with_id else []), "prediction"]
    writer.writerow(header)
    by_position = dict(zip(position, preds))  # a DDP sampler may repeat rows to even out its shards
    for i, p in sorted(by_position.items(), key=lambda pair: rows.index[pair[0]]):
        value = f"{p:.3f}" if isinstance(p, float) else (label_names[p] if label_names else p)
        where = [rows.index[i]] if glue else [rows.index[i], rows.line[i], *([rows.id[i]] if with_id else [])]
        writer.writerow([*where, value])
    write_text_atomic(path, text.getvalue())  # creates the folder
