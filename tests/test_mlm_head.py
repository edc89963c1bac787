"""teacher.mlm_head=fit: BERT's MLM head fitted on a frozen head-less teacher beats the unigram baseline on
held-out text, is cached by everything it depends on, is not fitted when the checkpoint has a head, and
turns MLM-KD on in a distillation run."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BertForPreTraining, BertModel

import run  # noqa: F401  (registers every recipe's schema for typed())
from datamodules.pretraining import PretrainingDataConfig, PretrainingDataModule
from modules import mlm_head
from modules.mlm_head import attach_fitted_mlm_head, fit_mlm_head, mlm_head_key
from modules.teacher import MLMHeadFitConfig, TeacherConfig, load_teacher
from modules.teacher_cache import MEMORY_STORE, teacher_fingerprint
from recipes import distill
from tests.conftest import WORDS, tiny_bert_config
from tests.test_distill import tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
# Fit settings at test scale: a 2-layer 32-wide teacher over a 70-token vocabulary fits in about a second.
SETTINGS = dict(steps=150, lr=1e-2, train_batches=12, val_batches=4)


@pytest.fixture(scope="module")
def repeated_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 pairs, each one word repeated (``good good good<TAB>good good``), 12 words: a masked token is the
    word around it, which a random teacher's hidden states carry, while the unigram baseline gets ~1/12."""
    rng = random.Random(0)
    words = WORDS[:12]
    lines = []
    for _ in range(400):
        word = rng.choice(words)
        lines.append(f"{' '.join([word] * rng.randint(4, 9))}\t{' '.join([word] * rng.randint(3, 7))}")
    path = tmp_path_factory.mktemp("repeated") / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def context_teacher_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A random bare 2-layer BERT whose weights are 10x BERT's init (std 0.2): its attention then carries the
    words around a [MASK] into that position's state (at std 0.02 the position's own embedding dominates)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("context_teacher")
    BertModel(tiny_bert_config(len(tokenizer), initializer_range=0.2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def data_module(teacher, corpus: Path, tmp_path: Path, **overrides) -> PretrainingDataModule:
    values = dict(source=str(corpus), max_seq_len=32, batch_size=16, eval_batch_size=32, val_size=128,
                  cache_dir=str(tmp_path / "data-cache"))  # fmt: skip
    return PretrainingDataModule(PretrainingDataConfig(**{**values, **overrides}), teacher.tokenizer)


def settings(tmp_path: Path, **overrides) -> MLMHeadFitConfig:
    return MLMHeadFitConfig(**{**SETTINGS, "cache_dir": str(tmp_path / "heads"), **overrides})


def bare_teacher(path: Path):
    return load_teacher(TeacherConfig(name_or_path=str(path), mlm_head="fit"))


@pytest.mark.smoke
def test_fitted_head_beats_unigram_on_held_out_text(context_teacher_dir, repeated_corpus, tmp_path) -> None:
    teacher = bare_teacher(context_teacher_dir)
    rng_before = torch.get_rng_state()
    fit = fit_mlm_head(teacher, data_module(teacher, repeated_corpus, tmp_path), settings(tmp_path))
    # The global RNG is untouched: runs with a fitted and with a loaded head initialise the same student.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not fit.from_cache and fit.steps == 150 and fit.heldout_tokens > 200 and fit.train_tokens > 250
    assert fit.unigram_acc < 0.1
    # Measured: 0.60 held-out accuracy vs 0.047 for the unigram baseline, on 233 masked tokens.
    assert fit.heldout_acc > 0.4 and fit.heldout_acc > 5 * fit.unigram_acc
    # BERT's head (transformers' class), decoder tied to the teacher's word embeddings, frozen; only the
    # transform and the bias train.
    p = fit.head.predictions
    embeddings = teacher.encoder.get_input_embeddings().weight
    assert p.decoder.weight is embeddings and not p.decoder.weight.requires_grad
    assert p.decoder.bias is p.bias
    meta = json.loads((fit.path / "meta.json").read_text())
    assert meta["heldout_acc"] == fit.heldout_acc and meta["unigram_acc"] == fit.unigram_acc
    assert meta["settings"]["steps"] == 150 and meta["fit_time_s"] > 0
    assert "predictions.decoder.weight" not in torch.load(fit.path / "head.pt", weights_only=True)


def test_attached_head_gives_the_teacher_mlm_logits(tiny_bare_teacher_dir, repeated_corpus, tmp_path) -> None:
    teacher = bare_teacher(tiny_bare_teacher_dir)
    assert not teacher.has_mlm_head
    bare_key = teacher_fingerprint(teacher)
    data = data_module(teacher, repeated_corpus, tmp_path)
    cfg = TeacherConfig(str(tiny_bare_teacher_dir), mlm_head="fit", mlm_head_fit=settings(tmp_path))
    fit = attach_fitted_mlm_head(teacher, cfg, data)
    assert teacher.has_mlm_head and teacher.mlm_head_key == fit.key
    batch = data.train_batches()[0]
    out = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(out.mlm_logits, fit.head(out.hidden_states[-1]))
    assert out.mlm_logits.shape == (*batch["input_ids"].shape, teacher.vocab_size)
    # The teacher-output cache must not serve targets cached without (or with another) head.
    assert teacher_fingerprint(teacher) != bare_key


def test_cache_key_changes_with_every_input(
    tiny_bare_teacher_dir, repeated_corpus, pairs_corpus, tmp_path
) -> None:
    teacher = bare_teacher(tiny_bare_teacher_dir)

    def key(corpus: Path = repeated_corpus, model=teacher, data: dict | None = None, fit: dict | None = None):
        data_module_ = data_module(teacher, corpus, tmp_path, **(data or {}))
        return mlm_head_key(model, data_module_, settings(tmp_path, **(fit or {})))

    base = key()
    assert key(fit={"cache_dir": str(tmp_path / "elsewhere")}) == base  # the cache folder is not an input
    other_weights = bare_teacher(tiny_bare_teacher_dir)
    with torch.no_grad():
        other_weights.encoder.encoder.layer[0].output.dense.bias.add_(1e-3)
    keys = {"teacher weights": key(model=other_weights), "corpus": key(corpus=pairs_corpus)}
    data_changes = {
        "max_seq_len": 24, "mlm_probability": 0.3, "max_examples": 200, "seed": 1, "batch_size": 8,
        "val_size": 96,
    }  # fmt: skip
    for name, value in data_changes.items():
        keys[f"data.{name}"] = key(data={name: value})
    fit_changes = {"steps": 151, "lr": 2e-2, "weight_decay": 0.0, "train_batches": 11, "val_batches": 1}
    for name, value in fit_changes.items():
        keys[f"teacher.mlm_head_fit.{name}"] = key(fit={name: value})
    assert base not in keys.values(), [name for name, key in keys.items() if key == base]
    assert len(set(keys.values())) == len(keys)


def test_second_fit_loads_from_the_cache_without_training(
    tiny_bare_teacher_dir, repeated_corpus, tmp_path, monkeypatch
) -> None:
    teacher = bare_teacher(tiny_bare_teacher_dir)
    first = fit_mlm_head(teacher, data_module(teacher, repeated_corpus, tmp_path), settings(tmp_path))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached head was fitted again")

    monkeypatch.setattr(mlm_head, "train_head", must_not_run)
    monkeypatch.setattr(mlm_head, "masked_states", must_not_run)  # not even the teacher's forwards
    again = bare_teacher(tiny_bare_teacher_dir)  # a fresh load, as the next run / trial does
    second = fit_mlm_head(again, data_module(again, repeated_corpus, tmp_path), settings(tmp_path))
    assert second.from_cache and not first.from_cache and second.key == first.key
    assert (second.heldout_acc, second.unigram_acc) == (first.heldout_acc, first.unigram_acc)
    assert second.fit_time_s == first.fit_time_s  # the fit's own time, from meta.json
    for (name, a), b in zip(first.head.state_dict().items(), second.head.state_dict().values()):
        assert torch.equal(a, b), name
    # Bit-identical weights: the teacher-output cache key of a loaded head equals the fitted one's.
    teacher.attach_mlm_head(first.head, first.key)
    again.attach_mlm_head(second.head, second.key)
    assert teacher_fingerprint(teacher) == teacher_fingerprint(again)


def test_fit_on_a_teacher_with_a_trained_head_uses_it(
    tiny_teacher_dir, repeated_corpus, tmp_path, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="modules.teacher"):
        teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_teacher_dir), mlm_head="fit"))
    assert teacher.has_mlm_head and teacher.fitted_mlm_head is None
    assert any("has a trained MLM head; using it, no fit" in r.message for r in caplog.records)
    cfg = TeacherConfig(name_or_path=str(tiny_teacher_dir), mlm_head="fit", mlm_head_fit=settings(tmp_path))
    assert attach_fitted_mlm_head(teacher, cfg, data_module(teacher, repeated_corpus, tmp_path)) is None
    assert not (tmp_path / "heads").exists()
    data = data_module(teacher, repeated_corpus, tmp_path)
    data.setup()
    batch = data.train_batches()[0]
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    ref = BertForPreTraining.from_pretrained(tiny_teacher_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(*inputs).prediction_logits
    torch.testing.assert_close(teacher(*inputs).mlm_logits, expected)  # the checkpoint's own head


def typed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def test_config_accepts_fit_and_booleans_and_rejects_anything_else() -> None:
    assert typed("teacher.mlm_head=fit").teacher.mlm_head == "fit"
    assert typed("teacher.mlm_head=true").teacher.mlm_head is True
    assert typed("teacher.mlm_head=false").teacher.mlm_head is False
    assert typed().teacher.mlm_head is None
    for bad in ("maybe", "1", "'true'"):
        with pytest.raises(ValueError, match=r"teacher\.mlm_head must be one of null, true, false, fit"):
            typed(f"teacher.mlm_head={bad}")
    with pytest.raises(ValueError, match=r"teacher\.mlm_head_fit\.steps"):
        typed("teacher.mlm_head_fit.steps=0")


def test_factorised_embeddings_are_refused_naming_the_setting(tokenizer, tmp_path) -> None:
    path = tmp_path / "albert_like"
    BertModel(tiny_bert_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    teacher = bare_teacher(path)
    teacher.encoder.set_input_embeddings(torch.nn.Embedding(len(tokenizer), 16))  # E=16 != hidden 32
    with pytest.raises(ValueError, match=r"teacher\.mlm_head=fit ties .* 16 dims .* 32"):
        mlm_head.build_mlm_head(teacher)


@pytest.mark.smoke
def test_distillation_with_a_fitted_head_runs_mlm_kd(
    tiny_bare_teacher_dir, pairs_corpus, tmp_path, monkeypatch
) -> None:
    """teacher.mlm_head=fit on a bare teacher: val/mlm_kd is reported, the head's accuracy is in metrics.json,
    and a second run (the next trial of a search) loads the head and reads every teacher output from the
    memory cache it shares with the first: the fitted teacher's key is stable across runs."""
    MEMORY_STORE.clear()
    fits = []
    original = mlm_head.train_head
    monkeypatch.setattr(mlm_head, "train_head", lambda *a, **k: fits.append(1) or original(*a, **k))
    extra = (
        "teacher.mlm_head=fit",
        f"teacher.mlm_head_fit.cache_dir={tmp_path / 'heads'}",
        "recipe.regular_steps=20",
        "recipe.teacher_cache.mode=memory",
        "recipe.teacher_cache.dtype=float32",
    )
    first = distill.run(tiny_run_config(tmp_path / "first", tiny_bare_teacher_dir, pairs_corpus, *extra))
    assert "val/mlm_kd" in first and first["val/mlm_kd"] > 0
    written = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert 0 <= written["teacher/mlm_head_unigram_acc"] < 1 and 0 < written["teacher/mlm_head_acc"] < 1
    second = distill.run(tiny_run_config(tmp_path / "second", tiny_bare_teacher_dir, pairs_corpus, *extra))
    assert len(fits) == 1  # fitted once; the second run loaded it
    assert second["teacher_cache/misses"] == 0
    assert second["teacher_cache/hits"] == first["teacher_cache/misses"]
    assert second["val/mlm_kd"] == first["val/mlm_kd"]
