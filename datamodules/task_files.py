"""Reading local task files (TSV, CSV, JSONL) into ``RawExample`` rows: the text columns and the label as
written, each row remembering its line for error messages.

Why not ``datasets.load_dataset("csv" / "json", ...)``: it reads through pandas / pyarrow, which infer
types (a label "1" becomes an int, a text "NA" becomes NaN), have no quote-free TSV by default, skip or
reject malformed rows without naming the file line, and report JSON errors without the line number; the
rows and the "file line N: ..." messages the tests pin would change. Files here are small enough that a
plain reader costs nothing.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.assets import DataError, decode_utf8

FORMATS = ("tsv", "csv", "jsonl")
SUFFIX_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass
class RawExample:
    """One row as read from a file or data set, before labels are encoded.

    Attributes:
        line: 1-based line of the row in its file (GLUE: the row's ``idx``), for error messages.
        texts: 1 or 2 texts, in the order of ``text_columns``.
        label: the label value as read; after ``parse_labels``: int, float or str.
    """

    line: int
    texts: tuple[str, ...]
    label: Any


def infer_format(path: str, fmt: str | None, field_name: str = "path") -> str:
    """The file format: ``fmt`` when given, else from the file suffix.

    Raises:
        ValueError: ``fmt`` is None and the suffix is not one of ``SUFFIX_FORMATS``.
    """
    if fmt is not None:
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ValueError(
            f"task.format: cannot infer the format of task.{field_name}={path!r} from suffix {suffix!r} "
            f"(known: {sorted(SUFFIX_FORMATS)}); set task.format to one of {list(FORMATS)}"
        )
    return SUFFIX_FORMATS[suffix]


def read_examples(path: Path, fmt: str, text_columns: list[str], label_column: str) -> list[RawExample]:
    """Read the text and label columns of every row of a TSV, CSV or JSONL file.

    TSV is read without quote handling: TSV has no quoting convention, and review text such as
    ``''Conan''`` or ``9" TV`` must stay as written. CSV uses the standard (Excel) quoting.

    Args:
        path: an existing file.
        fmt: "tsv", "csv" or "jsonl".
        text_columns: 1 or 2 column names (JSONL: keys).
        label_column: the label column name.

    Returns:
        One ``RawExample`` per data row, labels as read (str for TSV/CSV, any JSON value for JSONL).

    Raises:
        DataError: empty file, bad bytes, missing columns, malformed rows.
    """
    text = decode_utf8(path)
    if fmt == "jsonl":
        return _read_jsonl(text, path, text_columns, label_column)
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    return _read_delimited(reader, path, text_columns, label_column)


def _read_delimited(reader: Any, path: Path, text_columns: list[str], label_column: str) -> list[RawExample]:
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):  # skip leading blank lines
        header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty")
    columns = [h.strip() for h in header]
    missing = [c for c in [*text_columns, label_column] if c not in columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} not found in the header; the file has columns {columns} "
            "(set task.text_columns / task.label_column)"
        )
    text_idx = [columns.index(c) for c in text_columns]
    label_idx = columns.index(label_column)
    examples = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):  # blank line, e.g. at the end of the file
            continue
        if len(row) != len(columns):
            raise DataError(
                f"{path} line {reader.line_num}: {len(row)} fields, the header has {len(columns)} "
                f"({columns}); check for stray delimiters or quotes in this row"
            )
        examples.append(RawExample(reader.line_num, tuple(row[i] for i in text_idx), row[label_idx].strip()))
    if not examples:
        raise DataError(f"{path}: has a header but no data rows")
    return examples


def _read_jsonl(text: str, path: Path, text_columns: list[str], label_column: str) -> list[RawExample]:
    examples = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path} line {line_no}: not valid JSON ({err.msg}); jsonl needs one object per line"
            ) from err
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}; "
                "jsonl needs one object per line"
            )
        missing = [c for c in [*text_columns, label_column] if c not in record]
        if missing:
            raise DataError(
                f"{path} line {line_no}: key(s) {missing} not found; the object has keys {sorted(record)} "
                "(set task.text_columns / task.label_column)"
            )
        texts = tuple(record[c] for c in text_columns)
        bad = [c for c, t in zip(text_columns, texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"{path} line {line_no}: text column(s) {bad} must be strings, got {texts!r}")
        examples.append(RawExample(line_no, texts, record[label_column]))
    if not examples:
        raise DataError(f"{path}: file is empty")
    return examples
