"""AdaBERT: Gumbel straight-through, the ops and the cell, the efficiency loss, derive, the KD losses, the
layer probes, and recipe=adabert end to end on a tiny teacher and a tiny task."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification, ArchitectureSample
from modules.adabert_child import child_config, child_flops, child_params
from modules.adabert_ops import (
    OP_NAMES,
    DerivedArchitecture,
    apply_op,
    build_op,
    cell_edges,
    gumbel_st,
    op_costs,
)
from modules.adabert_training import (
    AdaBertModule,
    ArchOptimizer,
    TeacherTargets,
    tau_at,
    train_probe,
)
from tests.test_distill import CONF
from tests.test_finetune import finetune_overrides
from tests.test_recipes import run_py

EDGES = len(cell_edges(3))


def search_config(**overrides) -> AdaBertConfig:
    values = dict(vocab_size=40, embedding_size=12, hidden_size=8, max_cells=4, num_labels=2, pad_token_id=0)
    return AdaBertConfig(**{**values, **overrides})


def one_hot(index: int, size: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(index), size).float()


def test_gumbel_straight_through_is_one_hot_forward_and_soft_backward() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, len(OP_NAMES), requires_grad=True)
    sample = gumbel_st(logits, tau=0.5)
    assert torch.equal(sample.sum(-1), torch.ones(5)) and set(sample.unique().tolist()) <= {0.0, 1.0}
    (sample * torch.arange(len(OP_NAMES)).float()).sum().backward()
    assert logits.grad is not None and (logits.grad != 0).sum() > 5  # every row's logits, not only the chosen


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_the_sequence_length_and_zeroes_padding(name) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 11)  # (B, C, S)
    mask = torch.ones(3, 1, 11, dtype=torch.bool)
    mask[1, :, 7:] = False
    op = build_op(name, 8).eval()
    out = apply_op(op if name != "zero" else None, name, x * mask, mask)
    assert out.shape == x.shape
    assert (out[1, :, 7:] == 0).all()
    if name == "zero":
        assert (out == 0).all()


def test_pooling_ignores_padding() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    avg = apply_op(build_op("avg_pool_3", 1), "avg_pool_3", x, mask)
    assert avg.flatten().tolist() == pytest.approx(
        [1.5, 2.0, 2.5, 0.0]
    )  # the last real token averages (2, 3), not (2, 3, 0)
    neg = apply_op(build_op("max_pool_3", 1), "max_pool_3", -x, mask)
    assert neg.flatten().tolist() == pytest.approx(
        [-1.0, -1.0, -2.0, 0.0]
    )  # padding (0) never wins a max over negatives


def test_a_zero_edge_contributes_nothing() -> None:
    """Node 0 = std_conv_3(c_{k-2}) + zero(c_{k-1}): changing c_{k-1} leaves node 0 unchanged."""
    genotype = ["std_conv_3", "zero"] + ["zero"] * (EDGES - 2)
    model = AdaBertForSequenceClassification(
        child_config(search_config(), DerivedArchitecture(1, genotype))
    ).eval()
    cell = model.cells[0]
    s0, s1 = torch.randn(2, 8, 6), torch.randn(2, 8, 6)
    mask = torch.ones(2, 1, 6, dtype=torch.bool)
    base = cell(s0, s1, mask)
    assert torch.allclose(base, cell(s0, torch.randn(2, 8, 6), mask))
    assert not torch.allclose(base, cell(torch.randn(2, 8, 6), s1, mask))


def test_cell_inputs_are_renormalised_so_stacked_skip_cells_do_not_blow_up() -> None:
    # Every node of an all-skip cell sums the states before it; without the 1x1 input layers eight such
    # cells would grow the state roughly 4x per cell (4^8 ~ 65000x).
    torch.manual_seed(0)
    child = AdaBertForSequenceClassification(
        child_config(search_config(max_cells=8), DerivedArchitecture(8, ["skip"] * EDGES))
    ).train()
    mask = torch.ones(4, 1, 10)
    states = [torch.randn(4, 8, 10)] * 2
    for cell in child.cells:
        states.append(cell(states[-2], states[-1], mask))
    assert float(states[-1].std()) < 5 * float(states[0].std())


def test_super_network_normalises_by_batch_statistics_and_a_child_by_running_ones() -> None:
    # One op's input changes with every sampled path upstream: running averages over all paths fit none.
    norms = lambda m: [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm1d)]  # noqa: E731
    supernet = AdaBertForSequenceClassification(search_config())
    child = AdaBertForSequenceClassification(
        child_config(search_config(), DerivedArchitecture(2, ["std_conv_3"] * EDGES))
    )
    assert norms(supernet) and not any(b.track_running_stats for b in norms(supernet))
    assert all(b.track_running_stats for b in norms(child))
    supernet.eval()
    ids = torch.randint(5, 40, (6, 9))
    alone = supernet(ids[:3]).logits
    assert not torch.allclose(alone, supernet(ids).logits[:3])  # the batch's statistics, even in eval mode


def tiny_batches(n: int = 4, rows: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(n):
        ids = torch.randint(5, 40, (rows, 9), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                    "labels": (ids[:, 0] > 22).long(), "index": torch.arange(b * rows, (b + 1) * rows)})  # fmt: skip
    return out


def fit_search(targets: TeacherTargets, epochs: int, warmup: int) -> AdaBertForSequenceClassification:
    import lightning as L

    torch.manual_seed(0)
    model = AdaBertForSequenceClassification(search_config())
    module = AdaBertModule(model, targets, ("acc",), arch_optimizer=ArchOptimizer(lr=0.05, warmup_epochs=warmup))
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(tiny_batches(), batch_size=None))
    return model


@pytest.mark.smoke
def test_architecture_logits_stay_put_during_the_warmup_then_move() -> None:
    targets = TeacherTargets(torch.randn(32, 2), torch.randn(2, 32, 2))
    torch.manual_seed(0)
    initial = AdaBertForSequenceClassification(search_config())
    warm = fit_search(targets, epochs=1, warmup=1)
    assert torch.equal(warm.alpha_ops, initial.alpha_ops) and torch.equal(warm.alpha_k, initial.alpha_k)
    assert not torch.equal(warm.classifier.weight, initial.classifier.weight)  # the weights did train
    moved = fit_search(targets, epochs=2, warmup=1)
    assert not torch.equal(moved.alpha_ops, initial.alpha_ops)


def test_a_non_finite_loss_stops_the_search_with_what_to_change() -> None:
    targets = TeacherTargets(torch.full((32, 2), float("nan")), torch.randn(2, 32, 2))
    with pytest.raises(FloatingPointError, match="recipe.lr"):
        fit_search(targets, epochs=1, warmup=0)


def test_efficiency_loss_rises_with_k_and_with_heavier_ops() -> None:
    model = AdaBertForSequenceClassification(search_config())

    def cost(k: int, op: str) -> float:
        sample = ArchitectureSample(one_hot(OP_NAMES.index(op), len(OP_NAMES)).expand(EDGES, -1),
                                    one_hot(k - 1, 4))  # fmt: skip
        return float(model.efficiency_loss(sample))

    assert cost(1, "std_conv_3") < cost(2, "std_conv_3") < cost(4, "std_conv_3")
    assert cost(2, "zero") == 0 == cost(2, "skip")
    assert cost(2, "avg_pool_3") < cost(2, "std_conv_3") < cost(2, "std_conv_5") < cost(2, "std_conv_7")
    assert cost(2, "dil_conv_3") == cost(2, "std_conv_3")  # same weights and FLOPs, wider receptive field
    assert cost(4, "std_conv_7") == pytest.approx(1.0)  # the largest architecture of the space costs 1
    assert op_costs(8).argmax() == OP_NAMES.index("std_conv_7")


def test_efficiency_loss_gradient_reaches_the_architecture() -> None:
    model = AdaBertForSequenceClassification(search_config())
    model.efficiency_loss(model.sample_architecture(tau=1.0)).backward()
    assert model.alpha_ops.grad.abs().sum() > 0 and model.alpha_k.grad.abs().sum() > 0


def test_derive_on_hand_set_logits_gives_the_expected_cell() -> None:
    model = AdaBertForSequenceClassification(search_config())
    chosen = [
        "std_conv_3",
        "skip",
        "zero",
        "dil_conv_5",
        "max_pool_3",
        "avg_pool_3",
        "std_conv_7",
        "zero",
        "skip",
    ]
    with torch.no_grad():
        model.alpha_ops.zero_()
        for e, op in enumerate(chosen):
            model.alpha_ops[e, OP_NAMES.index(op)] = 3.0
        model.alpha_k.copy_(torch.tensor([0.0, 0.1, 2.0, 0.5]))
    arch = model.derive()
    assert arch == DerivedArchitecture(num_cells=3, genotype=chosen)
    assert arch.describe().splitlines()[1:4] == [
        "  node 0 = std_conv_3(c_{k-2}) + skip(c_{k-1})",
        "  node 1 = dil_conv_5(c_{k-1}) + max_pool_3(node 0)",
        "  node 2 = avg_pool_3(c_{k-2}) + std_conv_7(c_{k-1}) + skip(node 1)",
    ]
    # In eval mode the super-network runs exactly that child: 3 cells.
    ids = torch.randint(5, 40, (2, 7))
    assert model.eval()(ids).num_cells == 3


def test_child_size_and_flops_formulas_match_the_built_model() -> None:
    arch = DerivedArchitecture(2, ["std_conv_3", "skip", "zero", "dil_conv_5", "max_pool_3", "avg_pool_3",
                                   "std_conv_7", "zero", "skip"])  # fmt: skip
    child = AdaBertForSequenceClassification(child_config(search_config(), arch))
    heads = sum(p.numel() for p in child.cell_heads.parameters())  # training-only (probe KD)
    assert child_params(child.config) == child.num_parameters() - heads
    # Per token and cell: convs 2·(3 + 5 + 7)·8·8 = 1920, two pools 3·8 each = 48, the two 1x1 input convs
    # 2·2·8·8 = 256; x K = 2 cells; the 12 -> 8 projection 2·12·8 = 192; x 10 tokens; the classifier 2·8·2 = 32.
    assert child_flops(child.config, seq_len=10) == 10 * (2 * (1920 + 48 + 256) + 192) + 32


def test_pair_inputs_are_split_by_segment() -> None:
    model = AdaBertForSequenceClassification(search_config(pair=True))
    ids = torch.tensor([[2, 7, 8, 3, 9, 3, 0], [2, 7, 3, 9, 10, 11, 3]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    a, b, both = model.split_inputs(ids, mask, types)
    assert a.tolist() == [[2, 7, 8, 3, 0, 0, 0], [2, 7, 3, 0, 0, 0, 0]]
    assert b.tolist() == [[9, 3, 0, 0, 0, 0, 0], [9, 10, 11, 3, 0, 0, 0]]
    assert both.sum(1).tolist() == [4, 4]


def test_probe_learns_separable_features_and_reads_raw_inputs() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (200,))
    features = torch.randn(200, 5) * 30 + 100  # far from standardised
    features[:, 2] += 300 * labels  # class signal in one dimension, 10 noise std apart
    probe = train_probe(features, labels, 2, epochs=100)
    assert float((probe(features).argmax(-1) == labels).float().mean()) > 0.95


def test_tau_anneals_from_start_to_end() -> None:
    assert tau_at(0, 101, 1.0, 0.1) == pytest.approx(1.0)
    assert tau_at(50, 101, 1.0, 0.1) == pytest.approx(0.1**0.5)
    assert tau_at(100, 101, 1.0, 0.1) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------- end to end


def adabert_overrides(teacher, tsv, tmp_path, run: str = "run") -> list[str]:
    base = [
        o for o in finetune_overrides(teacher, tsv, tmp_path, run) if not o.startswith(("recipe", "recipe."))
    ]
    return base + [
        "recipe=adabert", f"teacher.name_or_path={teacher}", "recipe.teacher_finetune.max_steps=60",
        "recipe.teacher_finetune.optimizer.lr=3e-3", "recipe.embedding_size=16", "recipe.hidden_size=16",
        "recipe.max_cells=3", "recipe.search_epochs=3", "recipe.retrain_epochs=4", "recipe.lr=0.2",
        "recipe.lr_min=0.01", "recipe.arch_lr=0.05", f"recipe.cache_dir={tmp_path / 'targets'}",
    ]  # fmt: skip


@pytest.mark.smoke
def test_adabert_searches_derives_and_saves_a_loadable_child(
    tiny_teacher_dir, sentiment_tsv, tmp_path
) -> None:
    from transformers import AutoModelForSequenceClassification

    proc = run_py(*adabert_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["teacher/val/acc"] > 0.8  # the teacher fine-tuned first
    assert metrics["val/acc"] > 0.7  # the child learned the task (chance: 0.5)
    assert 1 <= metrics["num_cells"] <= 3 and metrics["compression"] > 1 and metrics["speedup"] > 0
    arch = json.loads((run_dir / "architecture.json").read_text())
    assert len(arch["genotype"]) == EDGES and len(arch["history"]) == 3  # one derived child per search epoch
    child = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").eval()
    assert child.config.genotype == arch["genotype"] and child.config.num_cells == metrics["num_cells"]
    assert child_params(child.config) == metrics["params"]
    report = (run_dir / "report.md").read_text()
    assert "## Derived cell" in report and (run_dir / "cell.png").stat().st_size > 0
    ids = torch.randint(5, 30, (2, 9))
    assert child(ids).logits.shape == (2, 2)


def adabert_run_config(teacher, tsv, tmp_path, run: str):
    from hydra import compose, initialize_config_dir

    import run as run_py_module

    overrides = [o for o in adabert_overrides(teacher, tsv, tmp_path, run) if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("run", overrides=overrides + ["recipe.measure_latency=false"])
    return run_py_module.to_run_config(cfg, str(tmp_path / run))


@pytest.mark.smoke
def test_killed_twice_and_resumed_run_matches_uninterrupted(
    tiny_teacher_dir, sentiment_tsv, tmp_path, monkeypatch
) -> None:
    from safetensors.torch import load_file

    from recipes import adabert

    full = adabert.run(adabert_run_config(tiny_teacher_dir, sentiment_tsv, tmp_path, "full"))
    original = AdaBertModule.training_step

    def killed_in(search: bool, epoch: int):
        def step(self, batch, batch_idx):
            if self.search == search and self.current_epoch == epoch and batch_idx == 1:
                raise KeyboardInterrupt("simulated kill")
            return original(self, batch, batch_idx)

        return step

    killed = tmp_path / "killed"
    for search, epoch in ((True, 1), (False, 2)):  # mid-search, then mid-retraining
        with monkeypatch.context() as patch:
            patch.setattr(AdaBertModule, "training_step", killed_in(search, epoch))
            with pytest.raises((KeyboardInterrupt, SystemExit)):
                adabert.run(adabert_run_config(tiny_teacher_dir, sentiment_tsv, tmp_path, "killed"))
        assert not (killed / "metrics.json").exists()
    assert (killed / "search" / "checkpoints" / "last.ckpt").exists()
    resumed = adabert.run(adabert_run_config(tiny_teacher_dir, sentiment_tsv, tmp_path, "killed"))
    for key in ("num_cells", "search/val/score", "search/best_step", "val/score", "best_step", "test/acc"):
        assert resumed[key] == full[key], key
    arch = [json.loads((tmp_path / r / "architecture.json").read_text()) for r in ("full", "killed")]
    assert arch[0] == arch[1]  # the same child and the same search trajectory
    weights = [load_file(tmp_path / r / "student" / "model.safetensors") for r in ("full", "killed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.smoke
def test_adabert_refuses_a_regression_task_before_any_work(tiny_teacher_dir, sentiment_tsv, tmp_path) -> None:
    overrides = adabert_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path) + ["task.num_labels=1"]
    proc = run_py(*overrides, cwd=tmp_path)
    assert proc.returncode != 0 and "task.num_labels=1" in proc.stderr and "regression" in proc.stderr
    assert not (tmp_path / "run" / "teacher").exists()


@pytest.mark.smoke
def test_saved_child_loads_after_only_import_modules_auto(tmp_path) -> None:
    """A derived child saved by the recipe loads through the Auto classes in a fresh interpreter that imported
    nothing of the project but ``modules.auto`` (the registration is not a side effect of some other import)."""
    import subprocess
    import sys

    torch.manual_seed(0)
    child = AdaBertForSequenceClassification(
        search_config(genotype=["std_conv_3"] * EDGES, num_cells=2)
    ).eval()
    child.save_pretrained(tmp_path / "child")
    ids = torch.tensor([[3, 4, 5, 0]])
    torch.save({"ids": ids, "logits": child(input_ids=ids).logits.detach()}, tmp_path / "expected.pt")
    script = f"""
import sys, torch
import modules.auto
from transformers import AutoModelForSequenceClassification
assert not any(m.startswith(("recipes", "callbacks", "tests")) for m in sys.modules)
model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "child")!r}).eval()
expected = torch.load({str(tmp_path / "expected.pt")!r})
assert type(model).__name__ == "AdaBertForSequenceClassification", type(model)
torch.testing.assert_close(model(input_ids=expected["ids"]).logits, expected["logits"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
