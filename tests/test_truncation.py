"""Truncation init (DistilBERT, PKD) copies exactly the named teacher layers; attention scores are q·kᵀ/√d."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel

from modules.attention_scores import AttentionScores
from modules.distillation_config import TruncationInit
from modules.portable import to_stock_bert
from modules.student import StudentForPreTraining, StudentForSequenceClassification, StudentModel
from modules.truncation import truncated_student, truncation_layers


def bert_config(**overrides) -> BertConfig:
    values = dict(vocab_size=97, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=40, attn_implementation="eager")  # fmt: skip
    return BertConfig(**{**values, **overrides})


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


@pytest.mark.parametrize(
    "n, k, scheme, expected",
    [(12, 6, "every_other", [0, 2, 4, 6, 8, 10]), (12, 3, "first", [0, 1, 2]), (12, 3, "last", [9, 10, 11]),
     (12, 4, "uniform", [2, 5, 8, 11]), (6, 3, "every_other", [0, 2, 4]), (5, 3, "every_other", [0, 2, 4])],
)  # fmt: skip
def test_truncation_layers(n, k, scheme, expected) -> None:
    assert truncation_layers(n, k, scheme) == expected


@pytest.mark.parametrize("n, k, scheme", [(6, 4, "every_other"), (6, 7, "first"), (6, 0, "last"), (6, 2, "odd")])
def test_truncation_layers_refuses_impossible_requests(n, k, scheme) -> None:
    with pytest.raises(ValueError, match="recipe.init"):
        truncation_layers(n, k, scheme)


def test_truncation_copies_exactly_the_named_layers() -> None:
    """Block k computes teacher layer layers[k]: fed the teacher's input to that layer, it gives its output."""
    torch.manual_seed(0)
    teacher = BertModel(bert_config()).eval()
    layers = [1, 3, 4]
    student = truncated_student(teacher, layers, StudentModel)
    ids, mask = inputs()
    with torch.no_grad():
        t = teacher(ids, attention_mask=mask, output_hidden_states=True)
        s = student(ids, mask, output_hidden_states=True)
        assert torch.equal(s.embeddings, t.hidden_states[0])
        ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for k, layer in enumerate(layers):
            x = t.hidden_states[layer]  # the teacher's input to `layer`
            want = teacher.encoder.layer[layer](x, attention_mask=ext)
            want = want[0] if isinstance(want, tuple) else want
            got, _ = student.blocks[k](x, ext, False)
            assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-5)
        assert torch.equal(student.pooler.weight, teacher.pooler.dense.weight)
    assert student.truncation_missing == []


def test_first_layers_of_a_classifier_match_its_hidden_states_and_keep_its_head() -> None:
    torch.manual_seed(1)
    teacher = BertForSequenceClassification(bert_config(num_labels=3)).eval()
    student = truncated_student(teacher, [0, 1, 2], StudentForSequenceClassification, num_labels=3)
    ids, mask = inputs()
    with torch.no_grad():
        t = teacher(ids, attention_mask=mask, output_hidden_states=True)
        s = student.student(ids, mask, output_hidden_states=True)
        for k in range(3):
            assert torch.allclose(s.block_outputs[k][mask.bool()], t.hidden_states[k + 1][mask.bool()], atol=1e-5)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    # It is a plain BERT stack, so it saves as stock transformers BERT with the same outputs.
    stock = to_stock_bert(student)
    with torch.no_grad():
        assert torch.allclose(stock(ids, attention_mask=mask).logits, student(ids, mask).logits, atol=1e-5)


def test_pretraining_heads_copied_from_a_teacher_with_heads_random_from_a_headless_one() -> None:
    torch.manual_seed(2)
    with_heads = BertForPreTraining(bert_config()).eval()
    student = truncated_student(with_heads, [0, 2, 4], StudentForPreTraining)
    assert student.truncation_missing == []
    assert torch.equal(student.mlm.dense.weight, with_heads.cls.predictions.transform.dense.weight)
    assert torch.equal(student.nsp.weight, with_heads.cls.seq_relationship.weight)
    headless = truncated_student(BertModel(bert_config()), [0, 2, 4], StudentForPreTraining)
    assert {n.split(".")[0] for n in headless.truncation_missing} == {"mlm", "nsp"}


def test_truncation_refuses_layers_outside_the_teacher() -> None:
    with pytest.raises(ValueError, match=r"recipe.init.layers \[0, 6\].*0..5"):
        truncated_student(BertModel(bert_config()), [0, 6], StudentModel)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(scheme="odd"), "recipe.init.scheme"), (dict(num_layers=-1), "recipe.init.num_layers"),
     (dict(layers=[]), "recipe.init.layers"), (dict(num_layers=2, layers=[0, 1, 2]), "disagrees")],
)  # fmt: skip
def test_truncation_init_config_checks(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TruncationInit(**kwargs)
    assert not TruncationInit().enabled and TruncationInit(num_layers=3).enabled


def naive_scores(hidden: torch.Tensor, attention, heads: int) -> torch.Tensor:
    q, k = attention.query(hidden), attention.key(hidden)
    b, s, width = q.shape
    d = width // heads
    out = torch.empty(b, heads, s, s)
    for h in range(heads):
        qh, kh = q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d]
        out[:, h] = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    return out


def test_attention_scores_of_stock_bert_and_of_a_student_are_q_k_over_sqrt_d() -> None:
    torch.manual_seed(3)
    teacher = BertModel(bert_config()).eval()
    student = truncated_student(teacher, [0, 2, 4], StudentModel)
    ids, mask = inputs()
    with torch.no_grad(), AttentionScores(teacher) as t_capture, AttentionScores(student) as s_capture:
        t = teacher(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        student(ids, mask)
    t_scores, s_scores = t_capture.scores(), s_capture.scores()
    assert len(t_scores) == 6 and len(s_scores) == 3
    for layer in range(6):
        want = naive_scores(t.hidden_states[layer], teacher.encoder.layer[layer].attention.self, 4)
        assert torch.allclose(t_scores[layer], want, atol=1e-5)
        # softmax of scores + mask is the model's own attention probabilities
        ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        assert torch.allclose((t_scores[layer] + ext).softmax(-1), t.attentions[layer], atol=1e-5)
    # The truncated student's first block is teacher layer 0 on the same embeddings: the same scores.
    assert torch.allclose(s_scores[0], t_scores[0], atol=1e-5)
    # outside the `with` block nothing is captured any more
    assert not teacher.encoder.layer[0].attention.self.query._forward_hooks


def test_attention_scores_carry_gradients_and_refuse_non_attention_models() -> None:
    student = truncated_student(BertModel(bert_config()), [0, 1], StudentModel).train()
    ids, mask = inputs()
    with AttentionScores(student) as capture:
        student(ids, mask)
    capture.scores()[1].sum().backward()
    assert student.blocks[1].attention.query.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="BERT-style"):
        AttentionScores(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="no forward"):
        with AttentionScores(student) as idle:
            pass
        idle.scores()
