"""The flash-fidelity analysis (reports/fidelity.py) on fabricated values: τ and ρ against hand-computed values,
the "higher = better" orientation, the seed spread, the table's order; and the study (benchmarks/fidelity.py) in
--quick mode on a tiny teacher, end to end and again from its finished stages."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reports.fidelity import (
    FlashMetric,
    StudentResult,
    downstream_ceiling,
    fidelity_rows,
    rank_agreement,
    seed_spread,
    write_fidelity,
)

ROOT = Path(__file__).resolve().parents[1]


def test_rank_agreement_against_hand_computed_values() -> None:
    # y swaps the middle pair: 5 concordant pairs, 1 discordant -> tau = (5 - 1) / 6; rank differences
    # (0, 1, -1, 0) -> rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    tau, rho, p = rank_agreement([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    assert tau == pytest.approx(4 / 6) and rho == pytest.approx(0.8) and 0 < p < 1
    assert rank_agreement([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])[:2] == (pytest.approx(-1.0), pytest.approx(-1.0))
    # NaN pairs are dropped; fewer than three pairs or a constant side give NaN
    tau, _, _ = rank_agreement([1.0, math.nan, 2.0, 3.0, 4.0], [1.0, 5.0, 2.0, 3.0, 4.0])
    assert tau == pytest.approx(1.0)
    assert math.isnan(rank_agreement([1.0, 2.0], [1.0, 2.0])[0])
    assert math.isnan(rank_agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])


def test_seed_spread() -> None:
    assert seed_spread([[1.0, 3.0], [5.0, 4.0]]) == pytest.approx((2 + 1) / 2)
    assert seed_spread([[0.0, 1.0, 3.0]]) == pytest.approx((1 + 3 + 2) / 3)  # mean over the seed pairs
    assert math.isnan(seed_spread([[1.0], [2.0]]))


def fabricated(n: int = 5) -> list[StudentResult]:
    """Student i: downstream score 60 + i; "acc" rises with i (agrees); "loss" falls with i (agrees, lower =
    better); "noise" is unrelated to i; seeds differ by 0.1 (acc) and 0.01 (loss)."""
    noise = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0][:n]
    results = []
    for i in range(n):
        flash = [{"acc": 0.5 + i / 10 + d, "loss": 2.0 - i / 10 + d / 10, "noise": noise[i], "params": 1e6 * (n - i)}
                 for d in (0.0, 0.1)]  # fmt: skip
        results.append(StudentResult(f"s{i}", flash, {"acc": 0.6 + i / 10, "loss": 1.0 - i / 10},
                                     [{"val/score": 60.0 + i}]))  # fmt: skip
    return results


CANDIDATES = (FlashMetric("acc", True), FlashMetric("loss", False), FlashMetric("noise", True),
              FlashMetric("params", True, naive=True), FlashMetric("absent", True))  # fmt: skip


def test_fidelity_rows_orientation_order_and_spread() -> None:
    rows = {r["metric"]: r for r in fidelity_rows(fabricated(), CANDIDATES)}
    assert "absent" not in rows  # no flash run reported it
    for name in ("acc", "loss"):  # a loss that falls as the score rises agrees: positive tau
        assert rows[name]["tau_down"] == pytest.approx(1.0) and rows[name]["rho_down"] == pytest.approx(1.0)
        assert rows[name]["tau_reg"] == pytest.approx(1.0) and rows[name]["tau_reg_down"] == pytest.approx(1.0)
        assert rows[name]["tau_seeds"] == pytest.approx(1.0)
    assert rows["loss"]["better"] == "lower"
    assert rows["acc"]["spread"] == pytest.approx(0.1) and rows["acc"]["spread_rel"] == pytest.approx(0.1 / 0.4)
    assert rows["params"]["tau_down"] == pytest.approx(-1.0) and math.isnan(rows["params"]["tau_reg"])
    assert rows["params"]["spread"] == 0.0
    # noise (3, 1, 4, 1.5, 5) vs (0..4): concordant 7 of 10 pairs -> tau (7 - 3) / 10
    assert rows["noise"]["tau_down"] == pytest.approx(0.4) and math.isnan(rows["noise"]["tau_reg"])
    order = [r["metric"] for r in fidelity_rows(fabricated(), CANDIDATES)]
    assert order[-2:] == ["noise", "params"]  # sorted by tau vs downstream, best first


def test_degenerate_downstream_scores_are_left_out() -> None:
    """A fine-tuned classifier that predicts one class for every row (acc 0.489, F1 = 2a / (1 + a)) scores a number
    that ranks nothing: the downstream columns leave it out (n), the regular columns keep it."""
    results = fabricated()
    results[4].downstream = [{"val/score": 0.0, "val/acc": 0.489, "val/f1": 2 * 0.489 / 1.489}]  # best flash, worst
    rows = {r["metric"]: r for r in fidelity_rows(results, CANDIDATES)}
    assert rows["acc"]["n_down"] == 4 and rows["acc"]["tau_down"] == pytest.approx(1.0)
    assert rows["acc"]["tau_reg"] == pytest.approx(1.0)
    text, _ = write_fidelity_text(results)
    assert "⚠ one class" in text and "1 of 5 fine-tuned students are degenerate" in text


ONE_CLASS = {"val/score": 0.0, "val/acc": 0.489, "val/f1": 2 * 0.489 / 1.489}


def test_fine_tuning_seeds_average_and_give_the_ceiling() -> None:
    """With several fine-tuning seeds the downstream score is the mean of the non-degenerate seeds; a student is
    degenerate only when every seed is; the seed-to-seed τ and spread are hand-checkable."""
    results = fabricated()
    # seed 1 puts student 1 below student 0 (59.5 < 61; seed 0: 61 > 60) and is 1 point up elsewhere
    for r, other in zip(results, [61.0, 59.5, 63.0, 64.0, 65.0]):
        r.downstream.append({"val/score": other})
    results[2].downstream.append(ONE_CLASS)  # a third, degenerate seed: left out of the mean
    assert results[0].score() == pytest.approx(60.5) and results[2].score() == pytest.approx(62.5)
    assert results[2].scores()[2] != results[2].scores()[2] and results[2].degenerate() == ""
    tau, spread, n = downstream_ceiling(results)
    # seed 0 (60..64) vs seed 1 (61, 59.5, 63, 64, 65): 9 of 10 pairs concordant -> tau 0.8
    assert n == 5 and tau == pytest.approx(0.8) and spread == pytest.approx((1 + 1.5 + 1 + 1 + 1) / 5)
    results[4].downstream = [ONE_CLASS, ONE_CLASS]
    assert results[4].degenerate() and math.isnan(results[4].score())
    rows = {r["metric"]: r for r in fidelity_rows(results, CANDIDATES)}
    assert rows["acc"]["n_down"] == 4
    # seed means 60.5, 60.25, 62.5, 63.5: students 0 and 1 swap -> 5 of 6 pairs concordant
    assert rows["acc"]["tau_down"] == pytest.approx(4 / 6)
    text, _ = write_fidelity_text(results)
    assert "Fine-tuning seeds: 3" in text and "over 4 students: τ 0.67, score spread 1.12 points" in text
    assert "62.5 (62.0, 63.0, ⚠)" in text


def write_fidelity_text(results: list[StudentResult]) -> tuple[str, list[dict]]:
    from reports.fidelity import markdown

    rows = fidelity_rows(results, CANDIDATES)
    return markdown(rows, results, "t"), rows


def test_write_fidelity_files(tmp_path) -> None:
    text, rows = write_fidelity(tmp_path, fabricated(), "fabricated")
    assert (tmp_path / "fidelity.png").stat().st_size > 0
    assert "| flash metric |" in text and "## Students" in text
    raw = list(csv.DictReader((tmp_path / "fidelity.csv").open()))
    assert len(raw) == 5 * 2 and {"student", "seed", "downstream/val/score"} <= set(raw[0])


def quick_study(out: Path, teacher: Path, corpus: Path, task: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [
        f"teacher.name_or_path={teacher}", f"data.source={corpus}", f"data.cache_dir={out.parent / 'data-cache'}",
        "data.max_examples=null", "data.val_size=40", "data.batch_size=8", "data.eval_batch_size=20",
        "data.max_seq_len=32", "student.max_position_embeddings=64", f"task.path={task}", "task.label_column=label",
        "task.binarize_at=null", "task.max_seq_len=32", f"task.cache_dir={out.parent / 'task-cache'}",
        "latency.seq_len=32", "recipe.probe.max_train_examples=100",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fidelity.py"), "--quick", "--students", "3", "--out", str(out),
         *extra, *overrides],
        cwd=out.parent, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"},
    )  # fmt: skip


@pytest.mark.slow  # about a minute on 2 cores: 3 students x (2 flash + regular + fine-tuning) + a rerun
def test_study_quick_end_to_end(tiny_teacher_dir, pairs_corpus, sentiment_tsv, tmp_path) -> None:
    out = tmp_path / "study"
    proc = quick_study(out, tiny_teacher_dir, pairs_corpus, sentiment_tsv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "probe/acc" in (out / "fidelity.md").read_text() and (out / "fidelity.png").exists()
    raw = list(csv.DictReader((out / "fidelity.csv").open()))
    assert len(raw) == 3 * 2 and all(r["flash/probe/acc"] and r["downstream/val/score"] for r in raw)
    flash = json.loads((out / "flash" / "Model_128_64_1_384_2x2" / "seed1" / "metrics.json").read_text())
    assert flash["steps"] == 20 and "val/fm_last" in flash  # --quick: 40 regular steps x 0.5
    assert len(list((out / "finetune").glob("*/Model_128_64_1_384_2x2/metrics.json"))) == 1
    assert "probe:" in proc.stdout and "s per flash trial" in proc.stdout
    # another fine-tuning budget reuses every flash and regular run; other distillation settings are refused
    before = (out / "regular" / "Model_128_64_1_384_2x2" / "metrics.json").stat().st_mtime
    again = quick_study(out, tiny_teacher_dir, pairs_corpus, sentiment_tsv, "recipe.downstream.max_steps=12",
                        "--finetune-seeds", "2")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "regular" / "Model_128_64_1_384_2x2" / "metrics.json").stat().st_mtime == before
    budgets = sorted(p.name for p in (out / "finetune").iterdir() if not p.name.startswith("teacher-"))
    assert len(budgets) == 2 and budgets[0].startswith("10steps-lr0.0005-kd-") and budgets[1].startswith("12steps-")
    # the pipeline's stage 4: one fine-tuned teacher (reused by the second budget), every student learns from it
    (teacher,) = (out / "finetune").glob("teacher-*")
    assert json.loads((teacher / "metrics.json").read_text())["steps"] == 10
    student = json.loads(next((out / "finetune").glob("12steps-*/Model_128_64_1_384_2x2/metrics.json")).read_text())
    assert student["task_kd/gamma"] == 0.5 and student["steps"] == 12
    seed1 = json.loads(next((out / "finetune").glob("12steps-*/Model_128_64_1_384_2x2-seed1/metrics.json")).read_text())
    assert seed1["steps"] == 12  # a second fine-tuning seed, in its own dir
    assert "fine-tuning 12 steps" in (text := (out / "fidelity.md").read_text()) and "Fine-tuning seeds: 2" in text
    other = quick_study(out, tiny_teacher_dir, pairs_corpus, sentiment_tsv, "recipe.regular_steps=60")
    assert other.returncode != 0 and "pick another --out" in other.stderr
