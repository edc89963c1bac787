"""Pruning (issue 19): the cubic schedule, global magnitude masks, RPP's proximal step against a naive loop, masks
that stay fixed through AdamW with weight decay, head / FFN surgery against the masked original, save / load round
trips, config errors; and each method end to end through run.py on a tiny random teacher (smoke)."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertModel,
)

import modules.auto  # noqa: F401
from callbacks.pruning import (
    FixedSparsity,
    GradualMagnitudePruning,
    ProximalPruning,
    finetune_sparsity_callbacks,
)
from modules.finetuning import FinetuneModule, metric_names
from modules.pruning import (
    cubic_sparsity,
    global_magnitude_prune_,
    head_scores,
    keep_top,
    mask_structures_,
    neuron_scores,
    proximal_step_,
    prunable_linears,
    rpp_reweight,
    sparsity_counts,
    structured_prune,
)
from modules.pruning_config import CubicSchedule, FinetuneSparsity, RPPConfig, StructuredConfig
from recipes.prune_config import PruneConfig
from tests.conftest import tiny_bert_config
from tests.test_recipes import run_py, tiny_overrides


def tiny_bert(seed: int = 0, **overrides) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(tiny_bert_config(40, **overrides)).eval()


# -- the cubic schedule (Zhu & Gupta eq. 1) ------------------------------------------------------------------------


@pytest.mark.parametrize("begin, end, freq", [(10, 110, 10), (0, 50, 7), (5, 6, 3)])
def test_cubic_schedule_follows_the_formula_and_reaches_the_target_exactly_at_the_end(begin, end, freq) -> None:
    final, initial = 0.8, 0.1
    assert cubic_sparsity(begin - 1, final, begin, end, freq, initial) == 0.0
    assert cubic_sparsity(end, final, begin, end, freq, initial) == final  # exactly, not approximately
    assert cubic_sparsity(end + 1000, final, begin, end, freq, initial) == final
    for step in range(begin, end):
        t = begin + (step - begin) // freq * freq  # the last pruning event
        expected = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3
        assert cubic_sparsity(step, final, begin, end, freq, initial) == pytest.approx(expected, abs=1e-12)
    values = [cubic_sparsity(s, final, begin, end, freq, initial) for s in range(begin, end + 1)]
    assert values == sorted(values)  # never decreases
    assert cubic_sparsity(begin, final, begin, end, freq, initial) == pytest.approx(initial)


def test_one_shot_schedule_prunes_at_once() -> None:
    assert cubic_sparsity(19, 0.5, 20, 20, 5) == 0.0 and cubic_sparsity(20, 0.5, 20, 20, 5) == 0.5


# -- unstructured masks --------------------------------------------------------------------------------------------


def test_global_magnitude_pruning_zeros_the_smallest_weights_over_all_layers_and_only_grows() -> None:
    model = tiny_bert()
    linears = prunable_linears(model)
    assert len(linears) == 2 * 6  # q, k, v, attention output, FFN in, FFN out per layer; no pooler, no embeddings
    weights = torch.cat([m.weight.detach().abs().flatten() for m in linears.values()])
    threshold = weights.kthvalue(int(0.3 * weights.numel())).values
    masks = global_magnitude_prune_(linears, 0.3)
    assert sparsity_counts(model)["sparsity"] == pytest.approx(0.3, abs=1 / weights.numel())
    for name, m in linears.items():
        assert not hasattr(m, "weight_orig") and isinstance(m.weight, torch.nn.Parameter)  # baked in
        assert torch.equal(masks[name], m.weight != 0)
        assert (m.weight.abs()[m.weight != 0] >= threshold).all()  # a global threshold, not per layer
    masks2 = global_magnitude_prune_(linears, 0.6)
    assert all((masks2[n] <= masks[n]).all() for n in masks)  # pruned weights stay pruned
    assert sparsity_counts(model)["sparsity"] == pytest.approx(0.6, abs=1 / weights.numel())


class _Classifier(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, 40, (32, 8), generator=g)
        rows = [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                 "token_type_ids": torch.zeros(8, dtype=torch.long), "labels": torch.tensor(i % 2)}
                for i in range(32)]  # fmt: skip
        return torch.utils.data.DataLoader(rows, batch_size=8)


def _finetune(model, callbacks, steps: int = 8) -> None:
    module = FinetuneModule(model=model, num_labels=2, metrics=metric_names(None, 2),
                            optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.5))  # fmt: skip
    L.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False, limit_val_batches=0,
              enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=_Classifier())  # fmt: skip


def test_masks_stay_exactly_zero_through_adamw_with_weight_decay() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(40, num_labels=2))
    masks = global_magnitude_prune_(prunable_linears(model), 0.5)
    model.config.pruning = {"method": "magnitude"}  # what recipe=prune records: recipe.sparsity.keep=auto keeps it
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(model).items()}
    callbacks = finetune_sparsity_callbacks(FinetuneSparsity(), model)
    assert [type(c) for c in callbacks] == [FixedSparsity]
    _finetune(model, callbacks)
    for name, m in prunable_linears(model).items():
        assert (m.weight[~masks[name]] == 0).all()  # exact zeros
        assert not torch.equal(m.weight[masks[name]], before[name][masks[name]])  # the rest trained
    # Without the callback the same steps move the zeros (weight decay alone would not: AdamW's update does).
    torch.manual_seed(0)
    free = BertForSequenceClassification(tiny_bert_config(40, num_labels=2))
    global_magnitude_prune_(prunable_linears(free), 0.5)
    _finetune(free, finetune_sparsity_callbacks(FinetuneSparsity(keep="off"), free))
    assert sparsity_counts(free)["sparsity"] < 0.01


def test_nip_prunes_while_fine_tuning_on_its_schedule() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(40, num_labels=2))
    cfg = FinetuneSparsity(nip=0.7, nip_schedule=CubicSchedule(begin_fraction=0.25, end_fraction=0.5, frequency=1))
    (callback,) = finetune_sparsity_callbacks(cfg, model)
    assert isinstance(callback, GradualMagnitudePruning)
    _finetune(model, [callback], steps=8)
    assert sparsity_counts(model)["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert (callback.begin, callback.end) == (2, 4)


# -- RPP ------------------------------------------------------------------------------------------------------------


def test_rpp_proximal_step_equals_a_naive_loop() -> None:
    model = tiny_bert(3)
    linears = prunable_linears(model)
    eps, lr, lam = 1e-2, 1e-3, 0.7
    alphas = rpp_reweight(linears, eps)
    expected = {}
    for name, m in linears.items():  # w <- sign(w) * max(|w| - lr * lam / (|w0| + eps), 0), one weight at a time
        w = m.weight.detach().clone().flatten().tolist()
        out = []
        for v in w:
            shrunk = abs(v) - lr * lam * (1.0 / (abs(v) + eps))
            out.append(math.copysign(shrunk, v) if shrunk > 0 else 0.0)
        expected[name] = torch.tensor(out).view_as(m.weight)
    proximal_step_(linears, alphas, lr, lam)
    for name, m in linears.items():
        torch.testing.assert_close(m.weight.detach(), expected[name], rtol=0, atol=1e-7)
    assert sparsity_counts(model)["sparsity"] > 0.05  # the small weights reached exact zero


def test_proximal_pruning_callback_steps_with_the_learning_rate_and_reweights() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(40, num_labels=2))
    callback = ProximalPruning(model, RPPConfig(lam=0.05, eps=1e-3, reweight_every=2))
    _finetune(model, [callback], steps=4)
    assert 0.05 < sparsity_counts(model)["sparsity"] < 1.0 and callback.lr > 0
    assert set(callback.state_dict()["alphas"]) == set(prunable_linears(model))


# -- structured -----------------------------------------------------------------------------------------------------


def test_structured_pruning_equals_the_masked_original_and_saves_and_loads(tmp_path) -> None:
    model = tiny_bert(5, num_attention_heads=4, intermediate_size=64)
    heads = keep_top(head_scores(model), 0.5)
    neurons = [sorted(torch.randperm(64, generator=torch.Generator().manual_seed(i))[:24].tolist()) for i in range(2)]
    assert [len(h) for h in heads] == [2, 2] and head_scores(model).shape == (2, 4)
    assert neuron_scores(model).shape == (2, 64)
    pruned = structured_prune(model, heads, neurons).eval()
    assert pruned.config.layer_heads == [2, 2] and pruned.config.layer_intermediate == [24, 24]
    assert pruned.encoder.layer[0].attention.self.query.weight.shape == (16, 32)
    assert pruned.encoder.layer[1].output.dense.weight.shape == (32, 24)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    ids = torch.randint(5, 40, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    masked = tiny_bert(5, num_attention_heads=4, intermediate_size=64)
    mask_structures_(masked, heads, neurons)
    with torch.no_grad():
        expected = masked(input_ids=ids, attention_mask=mask).last_hidden_state
        got = pruned(input_ids=ids, attention_mask=mask).last_hidden_state
        unmasked = model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked, expected, atol=1e-3)  # the test can fail: pruning did change the function
    pruned.save_pretrained(tmp_path)
    for kwargs in ({}, {"trust_remote_code": True}):
        loaded = AutoModel.from_pretrained(tmp_path, **kwargs).eval()
        with torch.no_grad():
            assert torch.equal(loaded(input_ids=ids, attention_mask=mask).last_hidden_state, got)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert classifier.bert.encoder.layer[0].intermediate.dense.weight.shape == (24, 32)
    assert "AutoModelForSequenceClassification" in json.loads((tmp_path / "config.json").read_text())["auto_map"]


def test_a_magnitude_pruned_model_saves_and_loads_as_plain_bert_with_its_zeros(tmp_path) -> None:
    model = tiny_bert(7)
    global_magnitude_prune_(prunable_linears(model), 0.4)
    model.config.pruning = {"method": "magnitude", "sparsity": 0.4}
    model.save_pretrained(tmp_path)
    loaded = BertModel.from_pretrained(tmp_path).eval()  # stock transformers, no project code
    assert loaded.config.pruning["method"] == "magnitude"
    theirs = loaded.state_dict()
    assert set(theirs) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    assert sparsity_counts(loaded) == sparsity_counts(model)


# -- config errors: before any work, naming the field and the fix ---------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "movement"}, "recipe.method must be one of"),
    ({"sparsity": 1.0}, r"recipe.sparsity .* \[0, 1\)"),
    ({"schedule": CubicSchedule(begin_fraction=0.6, end_fraction=0.5)}, "recipe.schedule.end_fraction"),
    ({"schedule": CubicSchedule(frequency=0)}, "recipe.schedule.frequency"),
    ({"rpp": RPPConfig(eps=0)}, "recipe.rpp"),
    ({"method": "structured", "structured": StructuredConfig(heads=0, ffn=0)}, "recipe.structured.heads"),
    ({"structured": StructuredConfig(heads=1.0)}, "recipe.structured.heads"),
    ({"regular_steps": 0}, "recipe.regular_steps"),
])  # fmt: skip
def test_prune_config_errors_name_the_field(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_finetune_sparsity_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="recipe.sparsity.keep"):
        FinetuneSparsity(keep="maybe")
    with pytest.raises(ValueError, match="leave recipe.sparsity.keep at auto or on"):
        FinetuneSparsity(nip=0.5, keep="off")


# -- end to end (smoke) ---------------------------------------------------------------------------------------------


def _task(tsv, tmp_path) -> list[str]:
    return [f"task.path={tsv}", "task.format=tsv", "task.text_columns=[text]", "task.label_column=label",
            "task.binarize_at=null", "task.batch_size=16", "task.max_seq_len=16", f"task.cache_dir={tmp_path / 'tc'}",
            "trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.mark.smoke
@pytest.mark.parametrize("method, extra", [
    ("magnitude", ["recipe.sparsity=0.6", "recipe.schedule.end_fraction=0.5", "recipe.schedule.frequency=2"]),
    ("rpp", ["recipe.rpp.lam=0.05", "recipe.rpp.reweight_every=5", "recipe.optimizer.lr=1e-3"]),
    ("structured", ["recipe.structured.heads=0.5", "recipe.structured.ffn=0.5"]),
])  # fmt: skip
def test_each_method_end_to_end_then_finetune_keeps_it(method, extra, tiny_bare_teacher_dir, pairs_corpus,
                                                        sentiment_tsv, tmp_path) -> None:  # fmt: skip
    base = [o for o in tiny_overrides(tiny_bare_teacher_dir, pairs_corpus, tmp_path) if not o.startswith("hydra.run")]
    proc = run_py("recipe=prune", f"recipe.method={method}", "recipe.regular_steps=12", *extra, *base,
                  "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'prune'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "prune" / "metrics.json").read_text())
    student = AutoModel.from_pretrained(tmp_path / "prune" / "student")
    counts = sparsity_counts(student)
    assert counts["params_nonzero"] == metrics["params_nonzero"] and metrics["latency/p50_ms"] > 0
    if method == "magnitude":
        assert metrics["sparsity"] == pytest.approx(0.6, abs=1e-3) and counts["sparsity"] == metrics["sparsity"]
    elif method == "rpp":
        assert 0.0 < metrics["sparsity"] < 1.0
    else:
        assert student.config.layer_heads == [2, 2] and metrics["params"] < metrics["params_before"]
    proc = run_py("recipe=finetune", f"recipe.model={tmp_path / 'prune' / 'student'}", "recipe.epochs=2",
                  "recipe.optimizer.lr=3e-3", *base, *_task(sentiment_tsv, tmp_path),
                  f"hydra.run.dir={tmp_path / 'ft'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft" / "model")
    if method != "structured":  # the mask held: every pruned weight is still exactly zero
        assert sparsity_counts(tuned)["sparsity"] == pytest.approx(counts["sparsity"], abs=1e-9)
        for name, m in prunable_linears(tuned).items():
            assert ((m.weight == 0) == (prunable_linears(student)[name.removeprefix("bert.")].weight == 0)).all()
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["test/score"] > 0


@pytest.mark.smoke
def test_prune_refuses_a_model_of_another_shape_before_any_work(tiny_bare_teacher_dir, pairs_corpus, tmp_path) -> None:
    other = tmp_path / "other"
    BertModel(tiny_bert_config(40, num_hidden_layers=3)).save_pretrained(other)
    proc = run_py("recipe=prune", f"recipe.model={other}", *tiny_overrides(tiny_bare_teacher_dir, pairs_corpus, tmp_path),
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "recipe.model=" in proc.stderr and "3 layers" in proc.stderr
