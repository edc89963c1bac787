"""The task-KD teacher's logits memo (modules/kd_logits.py): same logits as the teacher, each row encoded once."""

import torch
from transformers import BertConfig, BertForSequenceClassification

from modules.kd_logits import LogitsMemo, teacher_fingerprint


def tiny_classifier(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def batch_of(rows: list[list[int]], width: int) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_memo_returns_the_teachers_logits_and_encodes_each_row_once():
    teacher = tiny_classifier(0)
    key = teacher_fingerprint(teacher)
    memo = LogitsMemo()
    rows = [[2, 5, 7, 3], [2, 9, 3], [2, 11, 12, 13, 14, 3]]
    batch = batch_of(rows, 8)
    with torch.no_grad():
        direct = teacher(**batch).logits
    first = memo.logits(teacher, key, batch)
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-5)
    assert (memo.hits, memo.misses) == (0, 3)
    # the same rows in another order and padding: all hits, same logits per row
    again = memo.logits(teacher, key, batch_of([rows[2], rows[0]], 12))
    torch.testing.assert_close(again, direct[[2, 0]], atol=1e-5, rtol=1e-5)
    assert (memo.hits, memo.misses) == (2, 3)
    # a new row in a mixed batch: only it is encoded
    mixed = batch_of([rows[1], [2, 40, 41, 3]], 6)
    with torch.no_grad():
        expected = teacher(**mixed).logits
    torch.testing.assert_close(memo.logits(teacher, key, mixed), expected, atol=1e-5, rtol=1e-5)
    assert (memo.hits, memo.misses) == (3, 4)


def test_another_teacher_never_reads_the_first_ones_logits():
    a, b = tiny_classifier(0), tiny_classifier(1)
    assert teacher_fingerprint(a) == teacher_fingerprint(tiny_classifier(0))
    assert teacher_fingerprint(a) != teacher_fingerprint(b)
    memo = LogitsMemo()
    batch = batch_of([[2, 5, 7, 3]], 4)
    memo.logits(a, teacher_fingerprint(a), batch)
    with torch.no_grad():
        expected = b(**batch).logits
    torch.testing.assert_close(memo.logits(b, teacher_fingerprint(b), batch), expected)
    assert memo.misses == 2


def test_memo_stops_storing_at_its_cap_but_still_answers():
    teacher = tiny_classifier(0)
    memo = LogitsMemo(max_rows=1)
    batch = batch_of([[2, 5, 3], [2, 6, 3]], 3)
    with torch.no_grad():
        expected = teacher(**batch).logits
    torch.testing.assert_close(memo.logits(teacher, "k", batch), expected, atol=1e-5, rtol=1e-5)
    assert len(memo.store) == 1
