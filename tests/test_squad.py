"""SQuAD v1.1: reading and answer checks, doc-stride windows and their span labels, post-processing across
a window boundary, the official EM / F1, the span KD loss, and recipe=finetune task=squad end to end."""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers.models.bert import BertTokenizerLegacy  # the pure-Python (slow) tokenizer in transformers 5

from core.assets import DataError
from datamodules.squad import QATaskConfig, SquadDataModule, load_squad
from datamodules.squad_features import NOT_CONTEXT, featurize
from datamodules.squad_files import QAExample, check_answers, read_squad
from modules.losses import span_kd_loss
from modules.qa import answers_from_spans, best_spans, squad_scores
from tests.test_recipes import run_py

# 14 context words (one token each); "good movie" is tokens 9-10, and a window of 10 context tokens ends
# after token 9: the first window holds "good" only, the second (4 tokens of overlap) the whole answer.
CONTEXT = "the film was really quite bad and then the good movie was very happy"
ANSWER, ANSWER_START = "good movie", CONTEXT.index("good movie")


def qa_config(**overrides) -> QATaskConfig:
    values = dict(name="squad", source="local", train_path="t.json", validation_path="v.json",
                  max_seq_len=16, doc_stride=4, max_query_len=3, max_answer_len=5)  # fmt: skip
    return QATaskConfig(**{**values, **overrides})


def example(question: str = "what was good", context: str = CONTEXT) -> QAExample:
    return QAExample("q1", question, context, [ANSWER], [ANSWER_START])


def window_texts(features: dict[str, torch.Tensor], context: str) -> list[str]:
    """The context text each window covers, from its offsets."""
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), features["lengths"].long().cumsum(0)])
    texts = []
    for i in range(len(features["lengths"])):
        spans = features["offsets"][bounds[i] : bounds[i + 1]]
        spans = spans[spans[:, 0] != NOT_CONTEXT]
        texts.append(context[int(spans[0, 0]) : int(spans[-1, 1])])
    return texts


# ------------------------------------------------------------------------------------------- reading


def test_official_json_and_flat_jsonl_read_the_same_questions(tmp_path) -> None:
    official = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "q1", "question": "what was good", "answers": [{"text": ANSWER, "answer_start": ANSWER_START},
                                                               {"text": "movie", "answer_start": 31}]}]}]}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(official))
    flat = {"id": "q1", "question": "what was good", "context": CONTEXT,
            "answers": {"text": [ANSWER, "movie"], "answer_start": [ANSWER_START, 31]}}  # fmt: skip
    (tmp_path / "a.jsonl").write_text(json.dumps(flat) + "\n")
    assert read_squad(tmp_path / "a.json") == read_squad(tmp_path / "a.jsonl")
    assert read_squad(tmp_path / "a.json")[0].answers == [ANSWER, "movie"]


def test_answer_not_at_its_start_is_named() -> None:
    bad = QAExample("q7", "what", CONTEXT, [ANSWER], [ANSWER_START + 1])
    with pytest.raises(DataError, match=rf"'q7'.*answer_start={ANSWER_START + 1}.*counts characters"):
        check_answers([bad], "dev.json")
    with pytest.raises(DataError, match="'q1' appears twice"):
        check_answers([example(), example()], "dev.json")
    with pytest.raises(DataError, match="'q2': an answer text is empty"):
        check_answers([QAExample("q2", "what", CONTEXT, [""], [0])], "dev.json")


def test_layout_errors_name_the_fix(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"question": "x"}]))
    with pytest.raises(DataError, match="'data' list of articles"):
        read_squad(tmp_path / "a.json")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "1", "question": "q", "context": "c"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: key\(s\) \['answers'\] not found"):
        read_squad(tmp_path / "b.jsonl")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"doc_stride": 11}, "task.doc_stride"),  # 16 - 3 - 3 = 10 context tokens per window
        ({"max_seq_len": 10}, "task.max_seq_len"),
        ({"validation_path": None}, "task.validation_path"),
        ({"train_path": "train.csv"}, "task.train_path"),
        ({"source": "squad"}, "task.train_path"),
        ({"source": "glue"}, "task.source"),
    ],
)
def test_config_errors_name_the_field(overrides, field) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        qa_config(**overrides)


def hub_rows(n: int, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "title": "t", "question": "what was good", "context": CONTEXT,
             "answers": {"text": [ANSWER], "answer_start": [ANSWER_START]}} for i in range(n)]  # fmt: skip


class FakeSplit(list):
    """What datasets.load_dataset("squad")[split] offers the datamodule: rows and a content fingerprint."""

    def __init__(self, rows: list[dict], fingerprint: str) -> None:
        super().__init__(rows)
        self._fingerprint = fingerprint


def test_hub_squad_is_windowed_and_cached(monkeypatch, tokenizer, tmp_path) -> None:
    calls = []

    def load_dataset(name: str) -> dict:
        calls.append(name)
        return {"train": FakeSplit(hub_rows(5, "t"), "f1"), "validation": FakeSplit(hub_rows(3, "v"), "f2")}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    cfg = qa_config(
        source="squad", train_path=None, validation_path=None, cache_dir=str(tmp_path), max_examples=4
    )
    data = SquadDataModule(cfg, tokenizer)
    data.setup()
    assert calls == ["squad"] and not data.from_cache
    assert [len(data.examples[s]) for s in ("train", "validation")] == [4, 3]  # max_examples caps questions
    assert data.split_sizes == {"train": 8, "validation": 6}  # two windows per question
    batch = next(iter(data.val_dataloader()))
    assert batch["offsets"].shape == (6, 16, 2) and batch["example_index"].tolist() == [0, 0, 1, 1, 2, 2]
    assert (batch["offsets"][batch["attention_mask"] == 0] == NOT_CONTEXT).all()

    again = SquadDataModule(cfg, tokenizer)
    again.setup()
    assert again.from_cache and again.examples == data.examples


def test_squad_load_failure_and_slow_tokenizers_are_clear_errors(monkeypatch, tokenizer_dir) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'squad' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match=r"task.source=squad: .*ConnectionError.*task.source=local"):
        load_squad()
    slow = BertTokenizerLegacy.from_pretrained(tokenizer_dir)
    with pytest.raises(ValueError, match="not a fast tokenizer"):
        SquadDataModule(qa_config(), slow)


# ------------------------------------------------------------------------------------------- windows


def test_windows_overlap_and_label_the_answer_only_where_it_is_whole(tokenizer) -> None:
    features = featurize([example()], tokenizer, qa_config(), train=True)
    # [CLS] what was good [SEP] <10 context tokens> [SEP] = 16; the next window starts 10 - 4 = 6 tokens on.
    assert features["lengths"].tolist() == [16, 14]
    assert window_texts(features, CONTEXT) == [
        "the film was really quite bad and then the good",
        "and then the good movie was very happy",
    ]
    assert features["example_index"].tolist() == [0, 0]
    # Window 1 holds only "good": labelled [CLS]. Window 2: context tokens 3-4, after 5 question tokens.
    assert features["start_positions"].tolist() == [0, 8] and features["end_positions"].tolist() == [0, 9]
    second = features["input_ids"][16:].tolist()
    assert tokenizer.decode(second[8:10]) == ANSWER

    whole = featurize([example()], tokenizer, qa_config(max_seq_len=24), train=True)  # one window
    assert whole["lengths"].tolist() == [20]
    assert (int(whole["start_positions"][0]), int(whole["end_positions"][0])) == (14, 15)


def test_long_questions_are_cut_to_max_query_len(tokenizer) -> None:
    long = example("what was really very good in the film and why")
    features = featurize([long], tokenizer, qa_config(max_query_len=3), train=False)
    first = features["input_ids"][: features["lengths"][0]].tolist()
    assert tokenizer.decode(first[:5]) == "[CLS] what was really [SEP]"


# ------------------------------------------------------------------------------------ post-processing


def test_post_processing_picks_the_whole_answer_across_a_window_boundary(tokenizer) -> None:
    """Window 1 ends inside the answer ("... the good"); window 2 holds "good movie". The first window's
    best span is the truncated "good"; the second's full span scores higher and is the answer."""
    ex = example()
    features = featurize([ex], tokenizer, qa_config(), train=False)
    bounds = [0, *features["lengths"].long().cumsum(0).tolist()]
    length = max(features["lengths"].tolist())
    offsets = torch.full((2, length, 2), NOT_CONTEXT, dtype=torch.long)
    start = torch.zeros(2, length)
    end = torch.zeros(2, length)
    for w in range(2):
        spans = features["offsets"][bounds[w] : bounds[w + 1]].long()
        offsets[w, : len(spans)] = spans
        starts = spans[:, 0].tolist()
        ends = spans[:, 1].tolist()
        good = starts.index(ANSWER_START)
        start[w, good] = 5.0  # both windows want to start at "good"
        start[w, 1] = end[w, 1] = 100.0  # a question token: never an answer
        if ANSWER_START + len(ANSWER) in ends:
            end[w, ends.index(ANSWER_START + len(ANSWER))] = 4.0  # only window 2 can end after "movie"
        else:
            end[w, good] = 2.0  # window 1's best is the truncated "good" (5 + 2 = 7 < 9)
    spans = best_spans(start, end, offsets, features["example_index"], max_answer_len=5)
    assert spans.score.tolist() == [7.0, 9.0]
    assert CONTEXT[spans.start_char[0] : spans.end_char[0]] == "good"
    assert answers_from_spans(spans, [ex]) == {"q1": ANSWER}


def test_best_span_matches_brute_force_search() -> None:
    torch.manual_seed(0)
    w, s, max_len = 6, 12, 4
    start, end = torch.randn(w, s), torch.randn(w, s)
    offsets = torch.stack([torch.arange(s) * 3, torch.arange(s) * 3 + 2], -1).expand(w, s, 2).clone()
    offsets[:, :3] = NOT_CONTEXT  # question tokens
    offsets[1, 9:] = NOT_CONTEXT  # a shorter window (padding)
    spans = best_spans(start, end, offsets, torch.zeros(w, dtype=torch.long), max_len)
    for row in range(w):
        context = [i for i in range(s) if offsets[row, i, 0] != NOT_CONTEXT]
        score, i, j = max(
            (float(start[row, i] + end[row, j]), i, j)
            for i in context
            for j in context
            if i <= j < i + max_len
        )
        assert float(spans.score[row]) == pytest.approx(score)
        assert (int(spans.start_char[row]), int(spans.end_char[row])) == (3 * i, 3 * j + 2)


def test_squad_scores_use_the_official_normalisation() -> None:
    gold = [QAExample("a", "q", "c", ["Eiffel Tower", "the tower"], [0, 0]),
            QAExample("b", "q", "c", ["Paris"], [0])]  # fmt: skip
    # "The Eiffel tower!" normalises to "eiffel tower" (articles, punctuation, case): EM and F1 100.
    # "tower in Paris" vs "Paris": F1 = 2·(1/3)·1 / (1/3 + 1) = 0.5; EM 0.
    scores = squad_scores({"a": "The Eiffel tower!", "b": "tower in Paris"}, gold)
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx((100.0 + 50.0) / 2)
    # F1 is the best over the gold answers: "tower" vs "Eiffel Tower" 2/3, vs "the tower" ("tower") 1.
    assert squad_scores({"a": "tower", "b": ""}, gold) == pytest.approx({"exact_match": 50.0, "f1": 50.0})


def test_span_kd_loss_matches_the_formula_and_ignores_padding() -> None:
    torch.manual_seed(0)
    s_start, s_end, t_start, t_end = (torch.randn(2, 5) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    temp = 2.0

    def naive(s, t, m):
        total = 0.0
        for row in range(2):
            keep = m[row].bool()
            p_t, p_s = F.softmax(t[row, keep] / temp, -1), F.softmax(s[row, keep] / temp, -1)
            total += float((p_t * (p_t.log() - p_s.log())).sum())
        return total / 2 * temp**2

    expected = (naive(s_start, t_start, mask) + naive(s_end, t_end, mask)) / 2
    assert float(span_kd_loss(
        student_start_logits=s_start, student_end_logits=s_end, teacher_start_logits=t_start,
        teacher_end_logits=t_end, attention_mask=mask, temperature=temp,
    )) == pytest.approx(
        expected, rel=1e-5
    )
    noisy = s_start.clone()
    noisy[1, 3:] = 50.0  # padding logits do not matter
    assert float(span_kd_loss(
        student_start_logits=noisy, student_end_logits=s_end, teacher_start_logits=t_start,
        teacher_end_logits=t_end, attention_mask=mask, temperature=temp,
    )) == pytest.approx(
        expected, rel=1e-5
    )


# ---------------------------------------------------------------------------------------- end to end

PLACES = ["home", "city", "car", "job"]
FILLER = [w for w in "the a movie film actor plot story was very really and but then night day time".split()]


def squad_file(path: Path, n: int, seed: int) -> Path:
    """Questions "where was it ?" whose answer is the one place word in a 12-28-word context: learnable
    from token identity, and long enough that most contexts span two or three 32-token windows."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(12, 28))
        at = rng.randrange(len(words) + 1)
        place = rng.choice(PLACES)
        context = " ".join(words[:at] + [place] + words[at:])
        start = len(" ".join(words[:at])) + (1 if at else 0)
        qa = {
            "id": f"{seed}-{i}",
            "question": "where was it",
            "answers": [{"text": place, "answer_start": start}],
        }
        paragraphs.append({"context": context, "qas": [qa]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def squad_overrides(model: Path, tmp_path: Path, run: str = "run") -> list[str]:
    return [
        "recipe=finetune", "task=squad", "task.source=local", f"recipe.model={model}",
        f"task.train_path={squad_file(tmp_path / 'train.json', 300, seed=0)}",
        f"task.validation_path={squad_file(tmp_path / 'dev.json', 60, seed=1)}",
        "task.max_seq_len=24", "task.doc_stride=6", "task.max_query_len=6", "task.batch_size=16",
        "recipe.epochs=4", "recipe.optimizer.lr=3e-3", "recipe.measure_latency=false",
        "trainer.enable_progress_bar=false", f"task.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / run}",
    ]  # fmt: skip


@pytest.mark.smoke
def test_finetune_squad_learns_spans_and_task_kd_runs(tiny_teacher_dir, tmp_path) -> None:
    proc = run_py(*squad_overrides(tiny_teacher_dir, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Chance is about 1 in 20 context tokens; a model that learned the task finds the place word.
    assert metrics["val/exact_match"] > 60 and metrics["val/f1"] >= metrics["val/exact_match"]
    assert metrics["val/score"] == pytest.approx((metrics["val/exact_match"] + metrics["val/f1"]) / 2)
    assert metrics["train_examples"] == 300
    predictions = json.loads((run_dir / "predictions" / "squad_dev.json").read_text())
    assert len(predictions) == 60 and set(predictions.values()) <= set(PLACES) | {""}
    gold = {qa["id"]: qa["answers"][0]["text"] for qa in
            (p["qas"][0] for p in json.loads((tmp_path / "dev.json").read_text())["data"][0]["paragraphs"])}  # fmt: skip
    exact = 100 * sum(predictions[k] == v for k, v in gold.items()) / len(gold)
    assert exact == pytest.approx(metrics["val/exact_match"])  # the saved answers are the best-dev ones
    assert (run_dir / "model" / "config.json").exists()
    assert (
        "ForQuestionAnswering"
        in json.loads((run_dir / "model" / "config.json").read_text())["architectures"][0]
    )

    kd = squad_overrides(tiny_teacher_dir, tmp_path, run="kd") + [f"recipe.task_kd.teacher={run_dir / 'model'}",
                                                                  "recipe.max_steps=30"]  # fmt: skip
    proc = run_py(*kd, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train/kd" in (tmp_path / "kd" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert json.loads((tmp_path / "kd" / "metrics.json").read_text())["steps"] == 30


@pytest.mark.smoke
def test_squad_kd_teacher_must_be_a_qa_model(tiny_teacher_dir, tmp_path) -> None:
    overrides = squad_overrides(tiny_teacher_dir, tmp_path) + [f"recipe.task_kd.teacher={tiny_teacher_dir}"]
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode != 0 and "ForQuestionAnswering head" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.smoke
def test_lengths_the_model_cannot_embed_fail_before_featurising(tiny_teacher_dir, tmp_path) -> None:
    overrides = squad_overrides(tiny_teacher_dir, tmp_path) + [
        "task.max_seq_len=100"
    ]  # the model has 64 positions
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode != 0 and "task.max_seq_len=100 exceeds" in proc.stderr
    assert "max_position_embeddings=64" in proc.stderr and not (tmp_path / "cache").exists()
