"""reports/pruning.py on a fabricated study: non-zeros counted from the saved weights, deltas against the teacher."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from reports.pruning import main, read_study


def _run(root, name, test, weight, p50=10.0, prune=None) -> None:
    ft = root / name / "finetune"
    (ft / "model").mkdir(parents=True)
    save_file({"bert.encoder.layer.0.intermediate.dense.weight": weight, "bert.embeddings.word_embeddings.weight":
               torch.ones(3, 2)}, str(ft / "model" / "model.safetensors"))  # fmt: skip
    (ft / "model" / "config.json").write_text("{}")
    (ft / "metrics.json").write_text(json.dumps({"test/score": test, "val/score": test, "latency/p50_ms": p50,
                                                 "wall_time_s": 60.0}))  # fmt: skip
    if prune:
        (root / name / "prune").mkdir()
        (root / name / "prune" / "metrics.json").write_text(json.dumps({"wall_time_s": prune}))


def test_table_counts_non_zeros_from_the_weights_and_plots_both_curves(tmp_path) -> None:
    _run(tmp_path, "teacher", 80.0, torch.ones(2, 2))
    _run(tmp_path, "magnitude_50", 78.5, torch.tensor([[0.0, 1.0], [2.0, 0.0]]), prune=120.0)
    rows = {r["name"]: r for r in read_study(tmp_path)}
    assert rows["magnitude_50"]["sparsity"] == 0.5 and rows["magnitude_50"]["params_nonzero"] == 8
    assert rows["teacher"]["params"] == 10 and rows["magnitude_50"]["wall_s"] == 180.0
    main([str(tmp_path)])
    md = (tmp_path / "pruning.md").read_text()
    assert "| magnitude_50 | 50.0% |" in md and "-1.50" in md and "RPP | 59.3%" in md
    assert (tmp_path / "pruning_ratio.png").stat().st_size > 0 and (tmp_path / "pruning_latency.png").exists()
