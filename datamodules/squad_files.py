"""Reading SQuAD v1.1 questions: the official JSON layout or flat JSONL, hub rows, and the check that every
gold answer really is the context's text at its ``answer_start``.

Every problem is a ``DataError`` naming the file (or hub split) and the question id.

Why not ``datasets.load_dataset("json", ...)``: SQuAD's JSON nests articles > paragraphs > questions, which
we flatten ourselves anyway, and pyarrow's JSON errors name neither the article / paragraph nor the
question id that these messages give; the questions read are the same either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.assets import DataError, decode_utf8


@dataclass
class QAExample:
    """One question about one context; ``answers`` are the gold texts (SQuAD dev has up to 3 per question)."""

    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]


def read_squad(path: Path) -> list[QAExample]:
    """Questions from a SQuAD v1.1 JSON file or a flat JSONL file.

    Raises:
        DataError: not JSON, not the SQuAD layout, missing keys (named with the question id).
    """
    text = decode_utf8(path)
    if path.suffix.lower() == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    # The format follows the suffix: a SQuAD v1.1 document spans lines and needs .json.
                    hint = "; a SQuAD v1.1 JSON document needs the .json suffix" if line_no == 1 else ""
                    raise DataError(f"{path} line {line_no}: not valid JSON ({err.msg}){hint}") from err
        return [flat_example(r, f"{path} line {i}") for i, r in enumerate(records, start=1)]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        # The format follows the suffix: one question object per line is JSONL and needs .jsonl.
        hint = "; one JSON object per line is JSONL: name the file .jsonl" if err.msg == "Extra data" else ""
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}){hint}") from err
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(
            f"{path}: expected SQuAD v1.1 JSON, an object with a 'data' list of articles "
            '({"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [...]}]}]}); '
            "for one question per line use .jsonl"
        )
    examples = []
    for a, article in enumerate(document["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs", []), list):
            raise DataError(f"{path} data[{a}]: an article must be an object with a 'paragraphs' list")
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path} data[{a}].paragraphs[{p}]"
            if (
                not isinstance(paragraph, dict)
                or not isinstance(paragraph.get("context"), str)
                or not isinstance(paragraph.get("qas"), list)
            ):
                raise DataError(f"{where}: needs a 'context' string and a 'qas' list")
            for qa in paragraph["qas"]:
                if not isinstance(qa, dict):
                    raise DataError(
                        f"{where}: every entry of 'qas' must be an object, got {type(qa).__name__}"
                    )
                answers = qa.get("answers")
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    raise DataError(f"{where} question {qa.get('id')!r}: 'answers' must be a list of objects")
                flat = {**qa, "context": paragraph["context"], "answers": {
                    "text": [x.get("text") for x in answers],
                    "answer_start": [x.get("answer_start") for x in answers]}}  # fmt: skip
                examples.append(flat_example(flat, where))
    if not examples:
        raise DataError(f"{path}: no questions found")
    return examples


def flat_example(record: Any, where: str) -> QAExample:
    """One question in the flat Hugging Face layout (``{"id", "question", "context", "answers": {"text": [...],
    "answer_start": [...]}}``: a JSONL line or a hub row) as a ``QAExample``.

    Raises:
        DataError: not an object, missing keys, malformed answers (names ``where`` and the question id).
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("id", "question", "context", "answers") if k not in record]
    if missing:
        raise DataError(f"{where}: key(s) {missing} not found; the object has keys {sorted(record)}")
    answers = record["answers"]
    if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers):
        raise DataError(
            f"{where} question {record['id']!r}: 'answers' must be "
            '{"text": [...], "answer_start": [...]} (JSONL) or a list of {"text", "answer_start"} (JSON)'
        )
    texts, starts = list(answers["text"]), list(answers["answer_start"])
    if not texts or len(texts) != len(starts):
        raise DataError(
            f"{where} question {record['id']!r}: needs at least one answer and as many answer_start "
            f"values as texts, got {len(texts)} texts and {len(starts)} starts"
        )
    if not all(isinstance(t, str) for t in texts) or not all(isinstance(s, int) for s in starts):
        raise DataError(
            f"{where} question {record['id']!r}: answer texts must be strings and answer_start integers"
        )
    return QAExample(str(record["id"]), str(record["question"]), str(record["context"]), texts, starts)


def check_answers(examples: list[QAExample], where: str) -> None:
    """Every gold answer must be the context's text at its ``answer_start``: a mismatch (an offset counted
    in bytes, or in a differently normalised context) would silently train the model on the wrong span."""
    ids = set()
    for ex in examples:
        if ex.id in ids:
            raise DataError(f"{where}: question id {ex.id!r} appears twice; ids must be unique")
        ids.add(ex.id)
        for text, start in zip(ex.answers, ex.answer_starts):
            if not text.strip():
                raise DataError(
                    f"{where} question {ex.id!r}: an answer text is empty; SQuAD v1.1 answers are spans"
                )
            found = ex.context[start : start + len(text)]
            if found != text:
                raise DataError(
                    f"{where} question {ex.id!r}: answer {text!r} is not at answer_start={start} "
                    f"(the context has {found!r} there); answer_start counts characters of the context"
                )
