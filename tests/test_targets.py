"""The default run's two targets (reports/targets.py), on fabricated rows."""

import math

import pytest

from reports.targets import (
    Model,
    baseline_check,
    model_row,
    score_floor,
    speed_score_check,
    target_lines,
    target_metrics,
)

TEACHER = Model("teacher", 21.0, 0.2, 85.0, 1000)


def test_score_floor_is_the_standard_error_of_a_difference_of_two_accuracies():
    a, b = Model("a", 1, 0, 80.0, 1000), Model("b", 1, 0, 70.0, 500)
    expected = 100 * math.sqrt(0.8 * 0.2 / 1000 + 0.7 * 0.3 / 500)
    assert score_floor(a, b) == pytest.approx(expected)
    assert score_floor(a, Model("c", 1, 0, 70.0, None)) == 0.0


def test_model_row_reads_the_test_split_and_drops_a_contended_latency():
    row = model_row("s", {"latency/p50_ms": 4.0, "latency/p50_spread": 0.05},
                    {"test/score": 77.0, "test_examples": 1057, "val/score": 80.0, "validation_examples": 1057})
    assert (row.p50_ms, row.spread_ms, row.score, row.examples) == (4.0, pytest.approx(0.2), 77.0, 1057)
    assert model_row("s", {"latency/p50_ms": 4.0, "latency/contended": 1.0}, {"val/score": 80.0}).p50_ms is None
    assert model_row("s", {}, {"val/score": 80.0, "validation_examples": 10}).examples == 10


def test_speed_score_check_picks_the_fastest_student_meeting_both_targets():
    slow_good = Model("slow", 10.0, 0.1, 84.0, 1000)  # 2.1x
    fast_good = Model("fast", 6.0, 0.1, 77.0, 1000)  # 3.5x, 90.6%
    faster_bad = Model("faster", 5.0, 0.1, 70.0, 1000)  # 4.2x, 82%
    check = speed_score_check([slow_good, fast_good, faster_bad], TEACHER)
    assert check.met and check.best is fast_good
    assert check.speedup == pytest.approx(3.5) and check.score_ratio == pytest.approx(77 / 85)


def test_speed_score_check_reports_the_closest_miss():
    check = speed_score_check([Model("a", 5.0, 0.1, 70.0, 1000), Model("b", 6.5, 0.1, 75.0, 1000)], TEACHER)
    assert not check.met and check.best.label == "b"  # both >= 3x: the better score is the closer miss
    slow = speed_score_check([Model("a", 10.0, 0.1, 84.0, 1000)], TEACHER)
    assert not slow.met and slow.best.label == "a"
    assert speed_score_check([Model("a", None, 0, 80.0, 10)], TEACHER).best is None


@pytest.mark.parametrize(
    ("student", "verdict"),
    [
        (Model("s", 5.0, 0.05, 79.5, 1000), "better"),  # 2 ms faster, score within noise
        (Model("s", 7.0, 0.05, 85.0, 1000), "better"),  # same speed, 5 points better
        (Model("s", 6.95, 0.05, 80.5, 1000), "indistinguishable"),  # both differences below the floors
        (Model("s", 5.0, 0.05, 70.0, 1000), "trade-off"),  # faster but 10 points worse
        (Model("s", 9.0, 0.05, 79.9, 1000), "worse"),  # slower at an equal score
    ],
)
def test_baseline_check_needs_a_difference_beyond_the_floor(student, verdict):
    baseline = Model("baseline", 7.0, 0.1, 80.0, 1000)
    assert baseline_check(student, baseline).verdict == verdict


def test_target_lines_state_both_results_and_metrics_agree():
    baseline = Model("baseline", 7.0, 0.1, 80.0, 1000)
    student = Model("trial 2", 6.0, 0.1, 79.0, 1000)
    lines = target_lines([student], baseline, TEACHER)
    assert "met** — trial 2: 3.50× faster" in lines[0]
    assert "advantage over the baseline: beyond the noise" in lines[1]
    metrics = target_metrics([student], baseline, TEACHER)
    assert metrics == {"target/met": 1.0, "target/speedup": pytest.approx(3.5),
                       "target/score_ratio": pytest.approx(79 / 85), "target/beats_baseline": 1.0}
    near = Model("trial 3", 6.98, 0.1, 79.9, 1000)
    assert "NOT beyond the noise" in target_lines([near], baseline, TEACHER)[1]
    assert "not measured" in target_lines([student], None, TEACHER)[1]
    traded = Model("trial 4", 5.0, 0.1, 70.0, 1000)
    assert "a trade-off" in target_lines([traded], baseline, TEACHER)[1]


def test_flash_fidelity_is_oriented_so_agreement_is_positive_for_a_loss_too():
    from reports.autodistill import Candidate, flash_fidelity

    def cand(i: int, fm_flash: float, fm_regular: float, score: float) -> Candidate:
        return Candidate(f"trial {i}", "x", {"val/fm": fm_flash}, {"val/fm": fm_regular}, {"test/score": score})

    # lower flash loss <-> lower regular loss <-> higher score: perfect agreement both ways
    cands = [cand(0, 0.3, 0.2, 70.0), cand(1, 0.2, 0.1, 75.0), cand(2, 0.1, 0.05, 80.0)]
    assert flash_fidelity(cands, "val/fm", "min", "regular") == pytest.approx(1.0)
    assert flash_fidelity(cands, "val/fm", "min", "downstream") == pytest.approx(1.0)
    reversed_scores = [cand(0, 0.3, 0.2, 80.0), cand(1, 0.2, 0.1, 75.0), cand(2, 0.1, 0.05, 70.0)]
    assert flash_fidelity(reversed_scores, "val/fm", "min", "downstream") == pytest.approx(-1.0)
    assert math.isnan(flash_fidelity(cands[:1], "val/fm", "min"))


def test_speed_target_becomes_a_latency_constraint_unless_the_teacher_was_timed_on_a_busy_cpu():
    from recipes.teacher_row import with_speed_target
    from search.config import StudentSearchConfig

    cfg = StudentSearchConfig()
    bounded = with_speed_target(cfg, {"latency/p50_ms": 21.0}, 3.0)
    assert [(c.name, c.max) for c in bounded.constraints] == [("latency/p50_ms", 7.0)]
    assert with_speed_target(cfg, {"latency/p50_ms": 21.0}, None).constraints == []
    assert with_speed_target(cfg, {"latency/p50_ms": 21.0, "latency/contended": 1.0}, 3.0).constraints == []
    with pytest.raises(ValueError, match="recipe.speedup_target must be > 0"):
        from recipes.autodistill import AutoDistillConfig

        AutoDistillConfig(speedup_target=0.0)
