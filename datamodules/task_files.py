"""Reading local task files (TSV, CSV, JSONL) into ``RawExample`` rows: the text columns and the label as
written, each row remembering where it came from (its data-row position, its line, and its ``id`` / ``idx``
column when the file has one), for error messages and for prediction files that join back to the input.

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
# A column / key with one of these names is the row's own identity, copied to the prediction files.
ID_COLUMNS = ("id", "idx")


@dataclass
class RawExample:
    """One row as read from a file or data set, before labels are encoded.

    Attributes:
        line: 1-based line where the row starts in its file (GLUE: the row's ``idx``), for error messages.
        texts: 1 or 2 texts, in the order of ``text_columns``.
        label: the label value as read; after ``parse_labels``: int, float or str.
        index: 0-based position of the row among its file's data rows (header and blank lines not counted;
            rows dropped later still counted), or GLUE's ``idx``: what joins a prediction back to its row.
        id: the row's ``id`` / ``idx`` column (``ID_COLUMNS``) as written, when the data has one.
    """

    line: int
    texts: tuple[str, ...]
    label: Any
    index: int
    id: str | None = None


@dataclass
class SourceRows:
    """Where each row of a split came from, in split order: what a prediction file joins back on.

    Attributes:
        index: ``RawExample.index`` of each row (GLUE: its ``idx``).
        line: ``RawExample.line`` of each row.
        id: the ``id`` / ``idx`` column of each row ("" where a row lacks it), None when no row has one.
    """

    index: list[int]
    line: list[int]
    id: list[str] | None

    @classmethod
    def of(cls, examples: list[RawExample]) -> SourceRows:
        ids = None if all(ex.id is None for ex in examples) else [ex.id or "" for ex in examples]
        return cls([ex.index for ex in examples], [ex.line for ex in examples], ids)


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


def read_examples(
    path: Path, fmt: str, text_columns: list[str], label_column: str, label_optional: bool = False
) -> list[RawExample]:
    """Read the text and label columns of every row of a TSV, CSV or JSONL file.

    TSV is read without quote handling: TSV has no quoting convention, and review text such as
    ``''Conan''`` or ``9" TV`` must stay as written. CSV uses the standard (Excel) quoting.

    Args:
        path: an existing file.
        fmt: "tsv", "csv" or "jsonl".
        text_columns: 1 or 2 column names (JSONL: keys).
        label_column: the label column name.
        label_optional: a file without the label column is read with label None (a test file without gold
            labels); otherwise its absence is an error.

    Returns:
        One ``RawExample`` per data row, labels as read (str for TSV/CSV, any JSON value for JSONL; None
        without the label column).

    Raises:
        DataError: empty file, bad bytes, missing columns, malformed rows.
    """
    text = decode_utf8(path)
    if fmt == "jsonl":
        return _read_jsonl(text, path, text_columns, label_column, label_optional)
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    return _read_delimited(reader, path, text_columns, label_column, label_optional)


def _read_delimited(
    reader: Any, path: Path, text_columns: list[str], label_column: str, label_optional: bool
) -> list[RawExample]:
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):  # skip leading blank lines
        header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty")
    columns = [h.strip() for h in header]
    wanted = text_columns if label_optional and label_column not in columns else [*text_columns, label_column]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} not found in the header; the file has columns {columns} "
            f"({_format_hint(columns) or 'set task.text_columns / task.label_column'})"
        )
    text_idx = [columns.index(c) for c in text_columns]
    label_idx = columns.index(label_column) if label_column in columns else None
    id_idx = next((columns.index(c) for c in ID_COLUMNS if c in columns), None)
    examples = []
    start = reader.line_num + 1  # the line the next row starts on (a quoted CSV field may span lines)
    for row in reader:
        line, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):  # blank line, e.g. at the end of the file
            continue
        if len(row) != len(columns):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, the header has {len(columns)} "
                f"({columns}); check for stray delimiters or quotes in this row"
            )
        texts = tuple(row[i] for i in text_idx)
        row_id = row[id_idx].strip() if id_idx is not None else None
        label = row[label_idx].strip() if label_idx is not None else None
        examples.append(RawExample(line, texts, label, len(examples), row_id))
    if not examples:
        raise DataError(f"{path}: has a header but no data rows")
    return examples


def _format_hint(columns: list[str]) -> str | None:
    """What to set when a header read with the wrong delimiter came out as one column (``['text,label']``)."""
    if len(columns) != 1:
        return None
    if columns[0].startswith("{"):
        return "it looks like JSON lines: set task.format=jsonl"
    if "\t" in columns[0]:
        return "the header is tab-separated: set task.format=tsv"
    if "," in columns[0]:
        return "the header is comma-separated: set task.format=csv"
    return None


def _read_jsonl(
    text: str, path: Path, text_columns: list[str], label_column: str, label_optional: bool
) -> list[RawExample]:
    examples = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            hint = _format_hint([line]) if line_no == 1 and not line.lstrip().startswith("{") else None
            raise DataError(
                f"{path} line {line_no}: not valid JSON ({err.msg}); jsonl needs one object per line"
                + (f" ({hint})" if hint else "")
            ) from err
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}; "
                "jsonl needs one object per line"
            )
        wanted = text_columns if label_optional else [*text_columns, label_column]
        missing = [c for c in wanted if c not in record]
        if missing:
            raise DataError(
                f"{path} line {line_no}: key(s) {missing} not found; the object has keys {sorted(record)} "
                "(set task.text_columns / task.label_column)"
            )
        texts = tuple(record[c] for c in text_columns)
        bad = [c for c, t in zip(text_columns, texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"{path} line {line_no}: text column(s) {bad} must be strings, got {texts!r}")
        row_id = next((record[c] for c in ID_COLUMNS if c in record), None)
        row_id = None if row_id is None else str(row_id)
        examples.append(RawExample(line_no, texts, record.get(label_column), len(examples), row_id))
    if not examples:
        raise DataError(f"{path}: file is empty")
    return examples
