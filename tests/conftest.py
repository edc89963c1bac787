"""Shared fixtures: a tiny WordPiece tokenizer, tiny random BERT teachers (with and without heads) and a
tiny pairs corpus, all built in code so no test needs the network or the real assets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForPreTraining, BertModel, BertTokenizerFast

WORDS = (
    "the a movie film actor plot story scene good bad great awful boring funny sad happy love hate "
    "i you he she we they is was are were not very really quite so too and but or because then "
    "what where when why how who yes no maybe hello goodbye thanks please sorry okay right wrong "
    "night day time place home car city money job friend"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    (path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    # from_pretrained on the folder: in transformers 5, BertTokenizerFast(vocab_file=...) ignores the file.
    tokenizer = BertTokenizerFast.from_pretrained(path)
    assert len(tokenizer) == len(SPECIALS) + len(WORDS)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(tokenizer_dir)


def tiny_bert_config(vocab_size: int, **overrides) -> BertConfig:
    values = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
    )
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: BertTokenizerFast) -> Path:
    """A random 2-layer BERT with MLM and NSP heads, saved with its tokenizer."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_teacher")
    BertForPreTraining(tiny_bert_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bare_teacher_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: BertTokenizerFast) -> Path:
    """A random 2-layer bare BertModel (no heads), like the offline MiniLM."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_bare_teacher")
    BertModel(tiny_bert_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def pairs_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 `statement<TAB>reply` lines. Each line has a topic (one of four word groups) shared by its
    statement and reply, so next-sentence prediction is learnable: a random reply is usually off-topic."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "pairs.txt"
    topics = [WORDS[i::4] for i in range(4)]
    lines = []
    for _ in range(400):
        topic = rng.choice(topics)
        first = " ".join(rng.choices(topic, k=rng.randint(3, 9)))
        second = " ".join(rng.choices(topic, k=rng.randint(2, 7)))
        lines.append(f"{first}\t{second}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def sentiment_tsv(tmp_path_factory) -> Path:
    """300 rows, label = whether the sentence holds a positive word: learnable by a tiny model."""
    rng = random.Random(0)
    pos, neg = ["good", "great", "funny", "happy", "love"], ["bad", "awful", "boring", "sad", "hate"]
    filler = ["the", "movie", "film", "plot", "story", "was", "very", "really", "and", "actor"]
    rows = ["text\tlabel"]
    for _ in range(300):
        label = rng.random() < 0.5
        words = rng.choices(filler, k=rng.randint(3, 6)) + [rng.choice(pos if label else neg)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)}\t{int(label)}")
    path = tmp_path_factory.mktemp("task") / "sentiment.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path
