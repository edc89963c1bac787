"""The linear probe (modules/probe.py): on fabricated features, pooling against a naive loop, its config checks,
and recipe.probe end to end on a tiny teacher (probe/* in metrics.json, declared to the search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modules.probe import ProbeConfig, fit_probe, pool_states, probe_metric_names, score_probe, train_subset
from recipes import distill
from search.metrics import distill_metric_names
from tests.test_distill import tiny_run_config


def blobs(n: int, dim: int, gap: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes (unit variance) whose means are ``gap`` apart along the first axis."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(size=(n, dim))
    features[:, 0] += gap * labels
    return features, labels


def test_separable_features_give_accuracy_one() -> None:
    x, y = blobs(400, 16, gap=12.0, seed=0)
    dev_x, dev_y = blobs(200, 16, gap=12.0, seed=1)
    scores = score_probe(fit_probe(x, y), dev_x, dev_y, ("acc", "f1"), 2)
    assert scores["acc"] == 1.0 and scores["f1"] == 1.0


def test_random_labels_give_chance() -> None:
    rng = np.random.default_rng(0)
    x, dev_x = rng.normal(size=(1000, 32)), rng.normal(size=(2000, 32))
    y, dev_y = rng.integers(0, 2, 1000), rng.integers(0, 2, 2000)
    acc = score_probe(fit_probe(x, y), dev_x, dev_y, ("acc",), 2)["acc"]
    assert abs(acc - 0.5) < 0.05  # 2000 dev rows: sd of chance accuracy 0.011


def test_probe_is_deterministic_and_scale_free() -> None:
    """Same data -> the same predictions; features scaled by 1000 (a student with larger activations) -> the
    same accuracy, since the probe standardises them first."""
    x, y = blobs(300, 8, gap=1.0, seed=0)
    dev_x, dev_y = blobs(300, 8, gap=1.0, seed=1)
    a, b = fit_probe(x, y), fit_probe(x.copy(), y.copy())
    np.testing.assert_array_equal(a.predict(dev_x), b.predict(dev_x))
    scaled = score_probe(fit_probe(1000 * x, y), 1000 * dev_x, dev_y, ("acc",), 2)["acc"]
    assert scaled == pytest.approx(score_probe(a, dev_x, dev_y, ("acc",), 2)["acc"], abs=0.01)
    assert 0.6 < scaled < 0.85  # overlapping classes: better than chance, short of perfect


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="one class"):
        fit_probe(np.zeros((5, 3)), np.zeros(5, dtype=int))


def test_train_subset_is_seeded() -> None:
    assert train_subset(10, 20, seed=0) == list(range(10))
    first, again, other = train_subset(1000, 50, 0), train_subset(1000, 50, 0), train_subset(1000, 50, 1)
    assert first == again and first != other and len(set(first)) == 50 and first == sorted(first)


def test_pool_states_against_a_loop() -> None:
    hidden = torch.randn(3, 5, 4)  # (B, S, H)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    mean = pool_states(hidden, mask, "mean")
    for b in range(3):
        n = int(mask[b].sum())
        torch.testing.assert_close(mean[b], hidden[b, :n].mean(0))
    torch.testing.assert_close(pool_states(hidden, mask, "cls"), hidden[:, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"max_train_examples": -1}, "max_train_examples"), ({"max_train_examples": 1}, "max_train_examples"),
     ({"pool": "max"}, "pool"), ({"l2": 0.0}, "l2"), ({"max_iter": 0}, "max_iter")],
)  # fmt: skip
def test_probe_config_checks(kwargs, match) -> None:
    with pytest.raises(ValueError, match=f"recipe.probe.{match}"):
        ProbeConfig(**kwargs)
    assert not ProbeConfig().enabled and ProbeConfig(max_train_examples=2).enabled


def probe_overrides(task: Path, tmp_path: Path) -> list[str]:
    return [
        "recipe.probe.max_train_examples=100",
        f"task.path={task}",
        f"task.cache_dir={tmp_path / 'task-cache'}",
        "task.label_column=label",
        "task.binarize_at=null",
        "task.max_seq_len=32",
    ]


@pytest.mark.smoke
def test_distill_run_writes_probe_metrics(tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path) -> None:
    """recipe.probe.max_train_examples > 0: the distilled student is probed on the task and the names it reports
    are the ones the search is told; the tiny task (a positive or a negative word per row) is linearly
    decodable from mean-pooled states even of a barely trained student."""
    cfg = tiny_run_config(tmp_path / "run", tiny_teacher_dir, pairs_corpus, "recipe.regular_steps=10",
                          *probe_overrides(sentiment_tsv, tmp_path))  # fmt: skip
    metrics = distill.run(cfg)
    reported = {k for k in metrics if k.startswith("probe/")}
    assert reported == set(probe_metric_names(cfg.task)) == {n for n in distill_metric_names(cfg) if n.startswith("probe/")}
    assert metrics["probe/acc"] > 0.7 and metrics["probe/train_examples"] == 100
    assert metrics["probe/score"] == pytest.approx(50 * (metrics["probe/acc"] + metrics["probe/f1"]))
    assert {"val/fm_last", "val/mha_last"} <= set(metrics)  # the last block's layer-wise terms


def test_probe_is_off_by_default_and_refuses_other_tasks(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    cfg = tiny_run_config(tmp_path / "run", tiny_teacher_dir, pairs_corpus)
    assert not any(n.startswith("probe/") for n in distill_metric_names(cfg))
    regression = tiny_run_config(tmp_path / "run", tiny_teacher_dir, pairs_corpus, "recipe.probe.max_train_examples=50",
                                 "task.num_labels=1", "task.binarize_at=null")  # fmt: skip
    with pytest.raises(ValueError, match="regression"):
        distill.check_compatible(regression)


def test_search_can_take_probe_acc_as_an_objective(tmp_path) -> None:
    """The README's command: the pipeline's flash trials report probe/acc once recipe.probe is on, and the
    search's name check (before trial 0) refuses the objective while it is off."""
    from hydra import compose, initialize_config_dir

    import run
    from hydra_plugins.pareto_sweeper import check_metric_names
    from recipes.autodistill import trial_config

    objectives = "search.objectives=[{name: probe/acc, direction: max}, {name: latency/p50_ms, direction: min}]"
    for probe, ok in (("recipe.probe.max_train_examples=2000", True), ("recipe.probe.max_train_examples=0", False)):
        with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
            cfg = run.to_run_config(compose("run", overrides=[objectives, probe]), str(tmp_path))
        trial = trial_config(cfg, {}, cfg.recipe.distill_config("flash"), tmp_path)
        if ok:
            check_metric_names(cfg.search, distill_metric_names(trial), "search.metrics:distill_metric_names")
        else:
            with pytest.raises(ValueError, match="probe/acc"):
                check_metric_names(cfg.search, distill_metric_names(trial), "search.metrics:distill_metric_names")
