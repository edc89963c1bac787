"""Pre-training text into sentence pairs: reading ``first<TAB>second`` lines or documents of lines, the
seeded train/validation split by document, and NSP negatives (BERT's convention: 0 = real next, 1 = random).

Pure functions of their inputs and seeds, so the built examples are fixed by the config.

Why not ``datasets.load_dataset("csv" / "text", ...)``: a dialogue TSV has stray malformed lines that we
skip and count rather than fail on (pandas would reject or misparse them), and pairing consecutive lines of
a document is a sequential scan, not a per-row ``.map``; the ``dataset`` source does use ``load_dataset``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from core.assets import DataError

log = logging.getLogger(__name__)

IS_NEXT, NOT_NEXT = 0, 1


@dataclass
class Pairs:
    """Sentence pairs before NSP negatives: ``first[i]`` is followed by ``second[i]``; ``doc[i]`` its document."""

    first: list[str]
    second: list[str]
    doc: list[int]


def pairs_from_tsv(text: str, where: str) -> Pairs:
    """One pair per ``first<TAB>second`` line; blank lines are skipped, malformed ones skipped and counted.

    Args:
        text: the file's text.
        where: the source, for messages.

    Returns:
        The pairs, each its own document (so NSP negatives come from other pairs).

    Raises:
        DataError: no well-formed line at all (wrong ``data.format``?).
    """
    first, second, bad = [], [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            bad += 1
            continue
        first.append(parts[0].strip())
        second.append(parts[1].strip())
    if not first:
        raise DataError(
            f"{where}: no 'first<TAB>second' lines found ({bad} malformed); for one sentence per line "
            "(documents separated by blank lines) set data.format=lines"
        )
    if bad:
        log.info("%s: skipped %d malformed lines (not two non-empty tab-separated fields)", where, bad)
    # Each line is its own dialogue turn pair; treat each as a document so negatives come from other pairs.
    return Pairs(first, second, list(range(len(first))))


def pairs_from_lines(lines: list[str], where: str) -> Pairs:
    """Consecutive non-empty lines of a document (documents separated by blank lines) become pairs."""
    first, second, doc = [], [], []
    doc_id, previous = 0, None
    for line in lines:
        line = line.strip()
        if not line:
            doc_id, previous = doc_id + 1, None
            continue
        if previous is not None:
            first.append(previous)
            second.append(line)
            doc.append(doc_id)
        previous = line
    if not first:
        raise DataError(f"{where}: no two consecutive non-empty lines, so no sentence pairs to build")
    return Pairs(first, second, doc)


def split_pairs(pairs: Pairs, val_size: int, seed: int) -> tuple[Pairs, Pairs]:
    """Seeded train/validation split by document, so no validation sentence is seen in training."""
    docs = sorted(set(pairs.doc))
    random.Random(seed).shuffle(docs)
    val_docs, count = set(), 0
    counts: dict[int, int] = {}
    for d in pairs.doc:
        counts[d] = counts.get(d, 0) + 1
    for d in docs:
        if count >= val_size:
            break
        val_docs.add(d)
        count += counts[d]
    keep = {True: ([], [], []), False: ([], [], [])}
    for a, b, d in zip(pairs.first, pairs.second, pairs.doc):
        bucket = keep[d in val_docs]
        bucket[0].append(a), bucket[1].append(b), bucket[2].append(d)
    return Pairs(*keep[False]), Pairs(*keep[True])


def make_nsp_examples(
    pairs: Pairs, negative_prob: float, seed: int
) -> tuple[list[str], list[str], list[int]]:
    """Replace the second segment by one from another document with probability ``negative_prob``.

    Returns:
        first segments, second segments, NSP labels (0 = real next, 1 = random).
    """
    rng = random.Random(seed)
    n = len(pairs.first)
    second, labels = list(pairs.second), [IS_NEXT] * n
    if n < 2:
        return list(pairs.first), second, labels
    for i in range(n):
        if rng.random() >= negative_prob:
            continue
        for _ in range(10):  # a different document; give up (keep the positive) on tiny corpora
            j = rng.randrange(n)
            if pairs.doc[j] != pairs.doc[i]:
                second[i], labels[i] = pairs.second[j], NOT_NEXT
                break
    return list(pairs.first), second, labels
