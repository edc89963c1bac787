"""The pruning study's table and the two curves (issue 19): the deck's (score vs prune ratio) and ours (score vs
measured latency), from the run dirs ``benchmarks/pruning_study.sh`` leaves.

    python -m reports.pruning outputs/pruning        # -> pruning.md, pruning.csv, pruning_ratio.png, pruning_latency.png

Layout read: ``<dir>/<name>/finetune`` (a recipe=finetune run: metrics.json and model/) and, when the method pruned
on the corpus first, ``<dir>/<name>/prune`` (recipe=prune's metrics.json). ``teacher`` is the unpruned reference.
Non-zeros are counted from the fine-tuned model's saved weights (safetensors), so they are what is really stored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from reports.sweep_table import markdown_table, number, save_figure, write_csv

# The deck's numbers (Guo et al. 2019, Table 1, BERT-large): prune ratio -> SST-2 dev accuracy (and its drop).
DECK = {"NIP": [(50.0, 91.3, -1.9), (80.0, 88.7, -4.5)], "RPP": [(59.3, 92.4, -0.8), (88.4, 90.5, -2.7)]}
ENCODER = ("encoder.layer.",)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def weight_counts(model_dir: Path) -> dict[str, float]:
    """``params``, ``params_nonzero`` and the encoder linear weights' zero fraction (``sparsity``) of a saved model."""
    tensors: dict = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    encoder = [t for k, t in tensors.items() if any(m in k for m in ENCODER) and k.endswith("weight") and t.dim() == 2]
    zeros = sum(int((t == 0).sum()) for t in encoder)
    return {"params": float(sum(t.numel() for t in tensors.values())),
            "params_nonzero": float(sum(int((t != 0).sum()) for t in tensors.values())),
            "sparsity": zeros / max(1, sum(t.numel() for t in encoder))}  # fmt: skip


def read_study(root: Path) -> list[dict[str, Any]]:
    """One row per ``<root>/<name>/finetune`` with metrics.json and model/."""
    rows = []
    for ft in sorted(root.glob("*/finetune")):
        metrics, model = _read(ft / "metrics.json"), ft / "model"
        if not metrics or not model.exists():
            continue
        prune = _read(ft.parent / "prune" / "metrics.json")
        config = _read(model / "config.json")
        method = ft.parent.name.split("_")[0]
        rows.append({
            "name": ft.parent.name, "method": method, **weight_counts(model),
            "heads": config.get("layer_heads"), "ffn": config.get("layer_intermediate"),
            "p50_ms": metrics.get("latency/p50_ms"), "dev": metrics.get("val/score"), "test": metrics.get("test/score"),
            "wall_s": metrics.get("wall_time_s", 0.0) + prune.get("wall_time_s", 0.0),
        })  # fmt: skip
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """pruning.md: our table (against the unpruned teacher), then the deck's numbers."""
    teacher = next((r for r in rows if r["method"] == "teacher"), None)
    header = ["run", "sparsity (encoder linears)", "params (M)", "non-zero (M)", "p50 as the run timed it (ms)", "dev", "test",
              "test Δ vs teacher", "wall (min)"]  # fmt: skip
    body = []
    for r in sorted(rows, key=lambda r: (r["method"] != "teacher", r["method"], r["sparsity"])):
        delta = r["test"] - teacher["test"] if teacher and r["test"] is not None and teacher["test"] is not None else None
        body.append([r["name"], number(100 * r["sparsity"], ".1f") + "%", number(r["params"] / 1e6, ".2f"),
                     number(r["params_nonzero"] / 1e6, ".2f"), number(r["p50_ms"], ".1f"), number(r["dev"], ".2f"),
                     number(r["test"], ".2f"), number(delta, "+.2f"), number(r["wall_s"] / 60, ".1f")])  # fmt: skip
    deck = [[m, f"{ratio}%", f"{acc} ({drop:+})"] for m, points in DECK.items() for ratio, acc, drop in points]
    return "\n".join(["# Pruning: score vs prune ratio and vs measured latency", "",
                      *markdown_table(header, body), "",
                      "The deck (Guo et al. 2019, Table 1: BERT-large, SST-2 dev accuracy, drop vs unpruned):", "",
                      *markdown_table(["method", "prune ratio", "SST-2"], deck), ""])  # fmt: skip


def plot(rows: list[dict[str, Any]], root: Path) -> None:
    """pruning_ratio.png (the deck's curve: score vs prune ratio) and pruning_latency.png (score vs p50)."""
    from matplotlib.figure import (
        Figure,  # here: only the plot needs it; no pyplot (save_figure renders with Agg)
    )

    for x_key, label, name in (("ratio", "prune ratio: zero params / params (%)", "pruning_ratio"),
                               ("p50_ms", "measured p50, batch 1, dense kernels (ms)", "pruning_latency")):  # fmt: skip
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        for method in sorted({r["method"] for r in rows}):
            points = sorted((100 * (1 - r["params_nonzero"] / r["params"]) if x_key == "ratio" else r[x_key], r["test"])
                            for r in rows if r["method"] == method and r["test"] is not None
                            and (x_key == "ratio" or r[x_key] is not None))  # fmt: skip
            if points:
                ax.plot(*zip(*points), marker="o", label=method)
        ax.set_xlabel(label)
        ax.set_ylabel("test score")
        ax.legend()
        save_figure(fig, root / f"{name}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The pruning study's table and curves")
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    rows = read_study(args.root)
    (args.root / "pruning.md").write_text(render(rows))
    write_csv(args.root / "pruning.csv", rows)
    plot(rows, args.root)
    print(render(rows))


if __name__ == "__main__":
    main()
